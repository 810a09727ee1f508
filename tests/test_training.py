"""Tests of the training library: checkpoints, resuming, fallback, strategies, export."""

import json
import logging
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from net import free_ports

from video_reloc import checkpoints, data, evaluation, training
from video_reloc.metrics import THRESHOLDS

TESTS_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
DIM = 8


def tiny_examples(seed=0, num_classes=3, per_class=8, dim=DIM):
    """Small in-memory splits of train-like examples (query = the reference's segment)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split in ("train", "validation", "test"):
        queries, references, gts, labels = [], [], [], []
        for c in range(num_classes):
            for _ in range(per_class):
                length = int(rng.integers(8, 70))
                start = int(rng.integers(0, length - 2))
                end = int(rng.integers(start + 1, min(length, start + 20) + 1))
                ref = rng.standard_normal((length, dim)).astype(np.float32)
                ref[start:end] += 2.0 * np.eye(dim, dtype=np.float32)[c]
                references.append(ref)
                queries.append(ref[start:end].copy())
                gts.append((start, end))
                labels.append(c)
        splits[split] = data.Examples(
            query=queries,
            reference=references,
            groundtruth=np.array(gts, np.int32),
            label=np.array(labels, np.int64),
        )
    return splits


def tiny_config(model_dir, **overrides):
    fields = dict(
        model_dir=str(model_dir),
        dataset="activitynet_reloc/synthetic",
        train_steps=4,
        batch_size=4,
        units=8,
        bilinear_rank=2,
        checkpoint_every=2,
        eval_every=2,
        eval_batch_size=32,
        num_images=0,
        progress=False,
        bucket_span=100,  # one bucket of references: fewer traces (and compilations) of the step
    )
    fields.update(overrides)
    return training.TrainConfig(**fields)


def test_presets_and_config_checks():
    paper = training.preset_config("paper", model_dir="m")
    assert (paper.batch_size, paper.learning_rate, paper.clip_norm) == (128, 1e-3, 5.0)
    assert (paper.train_steps, paper.units, paper.bilinear_rank) == (1000, 128, 8)
    assert (paper.encoder_dropout, paper.matching_dropout) == (0.4, 0.2)
    assert paper.dataset == "activitynet_reloc/c3d" and paper.bucket_span == 30
    main_job = training.preset_config("synthetic", model_dir="m", seed=None, batch_size=16)
    assert main_job.dataset == "activitynet_reloc/synthetic" and main_job.batch_size == 16
    with pytest.raises(ValueError, match="ablation"):
        training.TrainConfig(model_dir="m", ablation="nope")
    with pytest.raises(ValueError, match="strategy"):
        training.TrainConfig(model_dir="m", strategy="tpu")
    with pytest.raises(ValueError, match="preset"):
        training.preset_config("nope", model_dir="m")


def _latest_step(model_dir):
    return int(checkpoints.checkpoint_candidates(model_dir)[0].rsplit("-", 1)[1])


@pytest.mark.slow
def test_train_resume_fallback_and_export(tmp_path, caplog):
    splits = tiny_examples()
    model_dir = tmp_path / "run"
    caplog.set_level(logging.INFO, logger=training.__name__)
    first = training.train(tiny_config(model_dir, num_images=2), splits)
    assert (first.start_step, first.step, len(first.losses)) == (0, 4, 4)
    assert all(np.isfinite(first.losses))
    # Batches of different padded lengths share one trace of the step (its input signature).
    assert "Traced the training step 1 time(s)." in caplog.messages
    assert _latest_step(model_dir) == 4 and (model_dir / "ckpt-2.index").exists()
    assert first.best_step in (2, 4)
    test = json.loads((model_dir / "results" / "test.json").read_text())
    assert set(test) == {f"{t:g}" for t in THRESHOLDS} | {"mean", "mean_iou"}
    assert test == pytest.approx(first.test)
    assert checkpoints.is_saved_model(first.export_path)
    assert first.export_path.parent == model_dir / "export"
    assert list((model_dir / "train").glob("events.*"))
    assert list((model_dir / "validation").glob("events.*"))
    recorded = checkpoints.read_model_config(model_dir)
    assert recorded["architecture"] == "cgbm" and recorded["feature_dim"] == DIM
    own = first.model.get_config()  # the model's own configuration, without its name
    del own["name"]
    assert recorded["model"]["config"] == json.loads(json.dumps(own))
    assert recorded["model"]["config"]["units"] == 8

    # Deterministic under the seed: the same run elsewhere draws the same batches, dropout
    # masks and weights (validations and checkpoints draw nothing).
    quiet = dict(eval_every=10, checkpoint_every=10, test=False, export=False)
    twin = training.train(tiny_config(tmp_path / "twin", **quiet), splits)
    np.testing.assert_allclose(twin.losses, first.losses, rtol=1e-6)
    for a, b in zip(twin.trained_model.get_weights(), first.trained_model.get_weights()):
        np.testing.assert_array_equal(a, b)

    # The trained model as a baselines.SegmentPredictor (lists of unpadded arrays in).
    segments = evaluation.ModelPredictor(first.model).predict(
        splits["test"].query, splits["test"].reference
    )
    assert segments.shape == (len(splits["test"]), 2) and segments.dtype == np.int32
    assert np.all(segments[:, 0] >= 0) and np.all(
        segments[:, 1] <= splits["test"].reference_lengths
    )
    assert np.all(segments[:, 1] - segments[:, 0] >= 1)

    # The same command with more steps resumes where the last checkpoint is.
    second = training.train(tiny_config(model_dir, train_steps=6, test=False, export=False), splits)
    assert (second.start_step, second.step, len(second.losses)) == (4, 6, 2)

    # A corrupt latest checkpoint falls back to the previous one, with a warning; a run whose
    # steps are done has nothing to do.
    data_file = next(model_dir.glob("ckpt-6.data-*"))
    data_file.write_bytes(b"truncated")
    caplog.clear()
    third = training.train(tiny_config(model_dir, train_steps=4, test=False, export=False), splits)
    assert third.start_step == third.step == 4 and third.losses == []
    assert any("ckpt-6" in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)

    # A different model is refused.
    with pytest.raises(ValueError, match="another configuration.*units: 8 recorded, 16 now"):
        training.train(tiny_config(model_dir, units=16), splits)


def _run_python(code, env=None, timeout=900):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": f"{TESTS_DIR}:{REPO_ROOT}", **(env or {})},
        cwd=REPO_ROOT,
    )


COMMON = """
    import json, logging, sys
    import numpy as np
    logging.basicConfig(level=logging.INFO)  # the training's log, on stderr
    from test_training import tiny_config, tiny_examples
    from video_reloc import training
    QUIET = dict(eval_every=100, checkpoint_every=100, test=False, export=False, num_images=0)
"""


@pytest.mark.slow
def test_mirrored_over_two_cpus_matches_one_device(tmp_path):
    code = (
        """
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    """
        + COMMON
        + f"""
    out = {{}}
    for strategy in ("mirrored", "one_device"):
        config = tiny_config(
            "{tmp_path}/" + strategy, strategy=strategy, train_steps=3, batch_size=8,
            encoder_dropout=0.0, matching_dropout=0.0, **QUIET)
        result = training.train(config, tiny_examples())
        # The last checkpoint: the weights, and Adam's moments, running means of the gradients
        # (Adam's steps hide a gradient's scale; its moments do not).
        reader = tf.train.load_checkpoint(config.model_dir)
        variables = {{
            name: reader.get_tensor(name).tolist()
            for name, dtype in reader.get_variable_to_dtype_map().items()
            if dtype.is_floating
        }}
        out[strategy] = dict(losses=result.losses, replicas=result.num_replicas,
                             variables=variables)
    print("RESULT" + json.dumps(out))
    """
    )
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    assert out["mirrored"]["replicas"] == 2 and out["one_device"]["replicas"] == 1
    # Distributed batches of every padded length share one trace of the step too.
    assert proc.stderr.count("Traced the training step 1 time(s).") == 2, proc.stderr[-3000:]
    assert len(out["mirrored"]["losses"]) == 3
    np.testing.assert_allclose(out["mirrored"]["losses"], out["one_device"]["losses"], rtol=1e-4)
    mirrored, one_device = out["mirrored"]["variables"], out["one_device"]["variables"]
    assert mirrored.keys() == one_device.keys()
    # Adam's variables: a first and a second moment of each trainable variable.
    trainable = [name for name in mirrored if name.startswith("optimizer/_trainable_variables/")]
    moments = [name for name in mirrored if name.startswith("optimizer/_variables/")]
    assert trainable and len(moments) >= 2 * len(trainable), sorted(mirrored)
    for name in mirrored:
        np.testing.assert_allclose(
            mirrored[name], one_device[name], rtol=1e-4, atol=1e-7, err_msg=name
        )


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes_end_with_the_same_weights(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    code = (
        COMMON
        + f"""
    task = int(sys.argv[1])
    config = tiny_config("{tmp_path}/run", strategy="multi_worker", train_steps=4,
                         batch_size=8, **QUIET)
    result = training.train(config, tiny_examples())
    assert result.num_replicas == 2, result.num_replicas
    np.savez("{tmp_path}/weights_%d.npz" % task, *result.trained_model.get_weights())
    print("RESULT" + json.dumps(dict(losses=result.losses, step=result.step)))
    """
    )
    procs = []
    for task in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": task}}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(code), str(task)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO_ROOT,
                env={
                    **os.environ,
                    "PYTHONPATH": f"{TESTS_DIR}:{REPO_ROOT}",
                    "TF_CONFIG": json.dumps(tf_config),
                },
            )
        )
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=400)
            assert proc.returncode == 0, stderr[-3000:]
            assert "Traced the training step 1 time(s)." in stderr, stderr[-3000:]
            outputs.append(json.loads(stdout.split("RESULT")[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert outputs[0]["step"] == outputs[1]["step"] == 4
    np.testing.assert_allclose(outputs[0]["losses"], outputs[1]["losses"], rtol=1e-6)
    w0 = np.load(tmp_path / "weights_0.npz")
    w1 = np.load(tmp_path / "weights_1.npz")
    assert len(w0.files) == len(w1.files) > 0
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])
    # The chief kept the checkpoints; the other worker's scratch copy is gone.
    assert (tmp_path / "run" / "ckpt-4.index").exists()
    assert not (tmp_path / "run" / ".worker_1").exists()
