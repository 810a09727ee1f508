"""End-to-end tests through the binaries: train, evaluate, export, --helpfull, SIGKILL resume."""

import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from video_reloc import checkpoints, data, evaluation, training
from video_reloc.metrics import THRESHOLDS

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_RUN = [
    "--units=8",
    "--bilinear_rank=2",
    "--batch_size=4",
    "--eval_batch_size=100",
    "--noprogress",
]


def _command(name):
    """The console script when installed, else `python -m video_reloc.cli.<name>`."""
    script = shutil.which(f"video-reloc-{name}", path=str(pathlib.Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", f"video_reloc.cli.{name}"]


def _run(args, timeout=240, check=True):
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=dict(os.environ)
    )
    if check:
        assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run through the binary; it also builds the synthetic dataset."""
    root = tmp_path_factory.mktemp("binaries")
    model_dir, data_dir = root / "model", root / "data"
    proc = _run(
        [
            *_command("train"),
            f"--model_dir={model_dir}",
            f"--data_dir={data_dir}",
            "--train_steps=4",
            "--eval_every=2",
            "--checkpoint_every=2",
            "--num_images=2",
            *TINY_RUN,
        ]
    )
    return model_dir, data_dir, proc


@pytest.mark.slow
def test_train_binary_end_to_end(trained):
    model_dir, data_dir, proc = trained
    assert (data_dir / "activitynet_reloc" / "synthetic").is_dir()  # built by the command
    assert "| Ours |" in proc.stdout and "| Chance (same pairs) |" in proc.stdout
    results = json.loads((model_dir / "results" / "test.json").read_text())
    assert set(results) == {f"{t:g}" for t in THRESHOLDS} | {"mean", "mean_iou"}
    assert results["mean"] == pytest.approx(
        np.mean([results[k] for k in ("0.5", "0.6", "0.7", "0.8", "0.9")])
    )
    assert checkpoints.is_saved_model(model_dir / "export" / "1")
    assert (model_dir / "ckpt-4.index").exists() and list((model_dir / "best").glob("*.index"))
    recorded = checkpoints.read_train_config(model_dir)
    assert recorded["units"] == 8 and recorded["dataset"] == "activitynet_reloc/synthetic"


@pytest.mark.slow
def test_validation_writes_readable_figures_to_tensorboard(trained):
    model_dir, _, _ = trained
    images = {}
    for path in (model_dir / "validation").glob("events.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag in ("segments_on_timeline", "attention"):
                    images.setdefault(value.tag, []).append(tf.make_ndarray(value.tensor))
    assert set(images) == {"segments_on_timeline", "attention"}
    for tag, summaries in images.items():
        assert len(summaries) == 2  # validations at steps 2 and 4
        width, height, *pngs = summaries[-1]
        assert len(pngs) == 2  # --num_images=2: one figure per pair
        picture = tf.io.decode_png(pngs[0]).numpy()
        assert picture.shape == (int(height), int(width), 3) and int(width) == 900, tag
        assert picture.std() > 10  # drawn, not blank


@pytest.mark.slow
def test_evaluate_binary_on_a_savedmodel_and_library_on_a_checkpoint(trained, tmp_path):
    model_dir, data_dir, _ = trained
    expected = json.loads((model_dir / "results" / "test.json").read_text())
    output, pairs = tmp_path / "saved.json", tmp_path / "pairs.json"
    proc = _run(
        [
            *_command("evaluate"),
            f"--model={model_dir / 'export' / '1'}",
            f"--data_dir={data_dir}",
            "--batch_size=200",
            f"--output={output}",
            f"--predictions_output={pairs}",
            f"--plots={tmp_path / 'plots'}",
            "--num_plots=1",
        ]
    )
    assert "| Ours |" in proc.stdout and "SavedModel" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "pair_000_attention.png",
        "pair_000_timeline.png",
    ]
    assert json.loads(output.read_text()) == pytest.approx(expected, abs=1e-9)
    records = json.loads(pairs.read_text())
    assert len(records) == 200 and {"prediction", "groundtruth", "iou", "query_id"} <= set(
        records[0]
    )
    # The same through the library on the best checkpoint (dataset read from the model dir).
    result = evaluation.evaluate(
        evaluation.EvaluateConfig(model=str(model_dir / "best"), data_dir=str(data_dir))
    )
    assert result.results == pytest.approx(expected, abs=1e-9)
    assert result.chance["mean"] < 20.0
    written = json.loads((model_dir / "results" / "evaluate_test.json").read_text())
    assert written == pytest.approx(expected, abs=1e-9)  # the default output of a model dir


@pytest.mark.slow
def test_export_binary_matches_the_checkpoint(trained, tmp_path):
    model_dir, data_dir, _ = trained
    _run(
        [
            sys.executable,
            "-m",
            "video_reloc.cli.export",
            f"--checkpoint={model_dir / 'best'}",
            f"--export_dir={tmp_path / 'models'}",
            "--version=7",
        ]
    )
    exported = tmp_path / "models" / "7"
    assert checkpoints.is_saved_model(exported)
    examples = data.load_split("validation", data_dir=data_dir).subset(range(16))
    model, _ = checkpoints.load_checkpoint_model(model_dir / "best")
    inputs, _ = data.pad_batch(examples.query, examples.reference, examples.groundtruth)
    outputs = tf.saved_model.load(str(exported)).signatures["serving_default"](
        **{key: tf.constant(value) for key, value in inputs.items()}
    )
    start, end, _ = evaluation.keras_predict_fn(model)(inputs)
    np.testing.assert_array_equal(outputs["start"].numpy(), start.numpy())
    np.testing.assert_array_equal(outputs["end"].numpy(), end.numpy())
    probabilities = np.exp(model(inputs)["log_probabilities"].numpy())
    steps = inputs["reference"].shape[1]
    np.testing.assert_allclose(
        outputs["probabilities"].numpy()[:, :steps], probabilities, rtol=1e-4, atol=1e-5
    )


def _loss_steps(model_dir):
    """Training-loss steps of each TensorBoard event file (one file per run), oldest first."""
    runs = []
    for path in sorted((model_dir / "train").glob("events.*"), key=lambda p: p.stat().st_mtime):
        steps = [
            event.step
            for event in tf.compat.v1.train.summary_iterator(str(path))
            for value in event.summary.value
            if value.tag == "loss"
        ]
        runs.append(steps)
    return runs


@pytest.mark.slow
def test_sigkill_mid_training_resumes_from_the_last_checkpoint(trained, tmp_path, caplog):
    _, data_dir, _ = trained
    model_dir = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "video_reloc.cli.train",
        f"--model_dir={model_dir}",
        f"--data_dir={data_dir}",
        "--train_steps=16",
        "--checkpoint_every=3",
        "--eval_every=100",
        "--summary_every=1",
        "--notest",
        "--noexport",
        "--num_images=0",
        *TINY_RUN,
    ]
    first = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT
    )
    try:
        deadline = time.monotonic() + 150
        while not checkpoints.checkpoint_candidates(model_dir):
            assert first.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    killed_steps = _loss_steps(model_dir)[0]
    assert killed_steps and max(killed_steps) < 16  # killed mid-training

    # The same run again, from the configuration it recorded (here in-process): it resumes.
    caplog.set_level(logging.INFO, logger=training.__name__)
    second = training.train(training.TrainConfig(**checkpoints.read_train_config(model_dir)))
    step = second.start_step
    assert f"Resumed from checkpoint {model_dir / f'ckpt-{step}'} at step {step}." in (
        caplog.messages
    )
    assert step >= 3 and step % 3 == 0 and step <= max(killed_steps)
    assert second.step == 16
    first_run, second_run = _loss_steps(model_dir)
    assert second_run == list(range(step + 1, 17))  # nothing before the checkpoint redone
    assert checkpoints.checkpoint_candidates(model_dir)[0].endswith("ckpt-16")


# Quiet start-up (video_reloc.cli.startup): no INFO line of TensorFlow's C++ side.

NATIVE_INFO = re.compile(r"^I\d{4} [\d:.]+\s+\d+ \S+:\d+\] ", re.MULTILINE)
LIBRARY_INFO = re.compile(
    r"I\d{4} [\d:.]+\s+\d+ (cudart_stub|cpu_feature_guard|port|dataset_builder|reader|"
    r"logging_logger|dataset_info|functional_saver|builder_impl|fingerprinting_utils|"
    r"signature_serialization)\.(cc|py):\d+\]"
)


def _quiet_env():
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def _helpfull_stderr(env):
    proc = subprocess.run(
        [sys.executable, "-m", "video_reloc.cli.export", "--helpfull"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # absl's help exits with 1
    assert "--checkpoint" in proc.stdout
    return proc.stderr


@pytest.mark.parametrize("setting, expected", [(None, "true"), ("false", "false"), ("0", "0")])
def test_the_bfc_cpu_allocator_is_asked_for_unless_the_environment_says(setting, expected):
    """Tests the setting itself: whether TensorFlow's default allocator keeps statistics varies
    between machines."""
    with mock.patch.dict(os.environ):  # importing it sets this process' variables too
        from video_reloc.cli import startup
    environ = {} if setting is None else {"TF_CPU_ALLOCATOR_USE_BFC": setting}
    startup.use_bfc_cpu_allocator_by_default(environ)
    assert environ == {"TF_CPU_ALLOCATOR_USE_BFC": expected}


def test_native_logs_on_request():
    """TF_CPP_MIN_LOG_LEVEL=0 brings TensorFlow's C++ INFO lines back. (`--verbosity` is absl's
    Python logging: it cannot reach lines logged while TensorFlow is imported; test_cli.py
    checks what it shows.)"""
    env = _quiet_env()
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    stderr = _helpfull_stderr(env=env)
    if not NATIVE_INFO.search(stderr):
        pytest.skip("this machine's TensorFlow logs no INFO line when it starts")
    assert "I0000" in stderr


@pytest.mark.slow
def test_train_binary_logs_only_our_progress(trained):
    """The main job: no TensorFlow / TFDS INFO lines; our progress and warnings still show."""
    _, _, proc = trained
    assert not LIBRARY_INFO.search(proc.stderr), proc.stderr[-4000:]
    assert "INFO:tensorflow:" not in proc.stderr
    assert "absl::InitializeLog()" not in proc.stderr
    assert re.search(r"I\d{4} .* training\.py:\d+\] Step 2 validation", proc.stderr)
    assert re.search(r"I\d{4} .* training\.py:\d+\] Exported the best model", proc.stderr)
    assert "Downloading and preparing dataset" in proc.stdout  # TFDS's own progress stays
