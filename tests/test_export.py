"""Tests of the SavedModel export: signature, fresh-process load, saved_model_cli, equality."""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import tensorflow as tf
from small_model_spec import FEATURE_DIM
from tensorflow.core.protobuf import saved_model_pb2

from video_reloc import export as export_module
from video_reloc import warmup as warmup_module
from video_reloc.decode import segment_scores
from video_reloc.export import export_saved_model, next_version, remove_stale_exports
from video_reloc.warmup import read_warmup_requests

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def make_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Three pairs of different valid lengths, padded to common arrays."""
    rng = np.random.default_rng(seed)
    return {
        "query": rng.standard_normal((3, 7, FEATURE_DIM)).astype("float32"),
        "query_length": np.array([7, 5, 2], "int32"),
        "reference": rng.standard_normal((3, 41, FEATURE_DIM)).astype("float32"),
        "reference_length": np.array([41, 30, 9], "int32"),
    }


def random_inputs(seed: int, batch: int, query_steps: int, reference_steps: int):
    """Random features and random valid lengths."""
    rng = np.random.default_rng(seed)
    return {
        "query": rng.standard_normal((batch, query_steps, FEATURE_DIM)).astype("float32"),
        "query_length": rng.integers(1, query_steps + 1, batch).astype("int32"),
        "reference": rng.standard_normal((batch, reference_steps, FEATURE_DIM)).astype("float32"),
        "reference_length": rng.integers(1, reference_steps + 1, batch).astype("int32"),
    }


@pytest.fixture(scope="module")
def model(small_model):
    return small_model


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    """The same model exported twice: version 1 with XLA, version 2 without."""
    base = tmp_path_factory.mktemp("export") / "reloc"
    return {
        "xla": export_saved_model(model, base, jit_compile=True),
        "plain": export_saved_model(model, base, jit_compile=False),
    }


def keras_reference(model, inputs):
    outputs = model(inputs, training=False, return_attention=True)
    scores = segment_scores(outputs["log_probabilities"], inputs["reference_length"]).numpy()
    return np.exp(outputs["log_probabilities"].numpy()), outputs["attention"].numpy(), scores


def check_against_keras(model, inputs, outputs, exact_argmax):
    """Outputs equal the Keras model's; the decoded segment is Eq. (12)'s argmax."""
    probabilities, attention, scores = keras_reference(model, inputs)
    np.testing.assert_allclose(outputs["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["attention"], attention, rtol=1e-5, atol=1e-6)
    start, end = np.asarray(outputs["start"]), np.asarray(outputs["end"])
    for b in range(len(start)):
        best = scores[b].max()
        assert 0 <= start[b] < end[b] <= inputs["reference_length"][b]
        # The chosen segment's score is the maximum (an untrained model has near-ties, which
        # XLA's rounding may break the other way).
        np.testing.assert_allclose(scores[b, end[b] - start[b] - 1, start[b]], best, rtol=1e-5)
        np.testing.assert_allclose(outputs["score"][b], best, rtol=1e-5)
        if exact_argmax:
            d, s = np.unravel_index(np.argmax(scores[b]), scores[b].shape)
            assert (start[b], end[b]) == (s, s + d + 1)


def test_layout_versions(exports):
    base = exports["xla"].parent
    assert exports["xla"].name == "1" and exports["plain"].name == "2"
    assert (exports["xla"] / "saved_model.pb").exists()
    assert (exports["xla"] / "variables").is_dir()
    assert next_version(base) == 3
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # no temporary folder left


def test_existing_version_is_refused(model, exports):
    with pytest.raises(FileExistsError):
        export_saved_model(model, exports["xla"].parent, version=1)


def test_leftovers_of_killed_exports_are_removed_not_reused(model, tmp_path):
    """A stale file planted in a killed export's folder does not reach the next version."""
    base = tmp_path / "reloc"
    for leftover in (".1.tmp", ".export-killed.tmp"):  # earlier and current temporary names
        (base / leftover / "variables").mkdir(parents=True)
        (base / leftover / "stale.txt").write_text("planted")
        (base / leftover / "variables" / "variables.index").write_text("planted")
    path = export_saved_model(model, base, jit_compile=False, warmup_shapes=[])
    assert path == base / "1"
    assert not (path / "stale.txt").exists()
    assert sorted(p.name for p in base.iterdir()) == ["1"]
    assert tf.saved_model.load(str(path)).signatures["serving_default"] is not None


def test_a_running_exports_folder_is_left_alone(model, tmp_path):
    """A folder whose lock is held (an export in progress elsewhere) is not removed."""
    base = tmp_path / "reloc"
    running = base / ".export-running.tmp"
    running.mkdir(parents=True)
    descriptor = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert remove_stale_exports(base) == []
        path = export_saved_model(model, base, jit_compile=False, warmup_shapes=[])
        assert running.is_dir() and path.name == "1"
    finally:
        os.close(descriptor)
    assert remove_stale_exports(base) == [running]
    assert sorted(p.name for p in base.iterdir()) == ["1"]


def test_concurrent_exports_get_distinct_versions(model, tmp_path, monkeypatch):
    """Two exports into one base at once, both inside their write at the same time."""
    base = tmp_path / "reloc"
    both_writing = threading.Barrier(2, timeout=120)
    write = warmup_module.write_warmup_requests

    def write_together(folder, requests):
        both_writing.wait()  # each has its own folder open here
        return write(folder, requests)

    monkeypatch.setattr(warmup_module, "write_warmup_requests", write_together)
    results, errors = [], []

    def export():
        try:
            results.append(export_saved_model(model, base, jit_compile=False))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=export) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    assert sorted(p.name for p in results) == ["1", "2"]
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    for path in results:
        assert len(read_warmup_requests(path)) == 1


def test_a_fresh_folder_removed_before_it_is_locked_is_replaced(tmp_path, monkeypatch):
    """Another export's clean-up may take a new folder, not locked yet, for a leftover."""
    made = []
    mkdtemp = export_module.tempfile.mkdtemp

    def mkdtemp_then_cleaned_up(**kwargs):
        path = mkdtemp(**kwargs)
        made.append(path)
        if len(made) == 1:
            os.rmdir(path)  # what remove_stale_exports in another export does to it
        return path

    monkeypatch.setattr(export_module.tempfile, "mkdtemp", mkdtemp_then_cleaned_up)
    path, descriptor = export_module._fresh_folder(tmp_path)
    os.close(descriptor)
    assert len(made) == 2 and str(path) == made[1] and path.is_dir()


@pytest.mark.parametrize("kind", ["xla", "plain"])
def test_signature_names_dtypes_shapes(exports, kind):
    signature = tf.saved_model.load(str(exports[kind])).signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in specs.items()} == {
        "query": (tf.float32, [None, None, FEATURE_DIM]),
        "query_length": (tf.int32, [None]),
        "reference": (tf.float32, [None, None, FEATURE_DIM]),
        "reference_length": (tf.int32, [None]),
    }
    outputs = signature.structured_outputs
    assert {name: spec.dtype for name, spec in outputs.items()} == {
        "start": tf.int32,
        "end": tf.int32,
        "score": tf.float32,
        "probabilities": tf.float32,
        "attention": tf.float32,
    }
    inputs = make_inputs()
    result = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    assert {k: v.shape.as_list() for k, v in result.items()} == {
        "start": [3],
        "end": [3],
        "score": [3],
        "probabilities": [3, 41, 4],
        "attention": [3, 41, 7],
    }


@pytest.mark.parametrize("kind", ["xla", "plain"])
def test_equals_keras_model(model, exports, kind):
    signature = tf.saved_model.load(str(exports[kind])).signatures["serving_default"]
    cases = [make_inputs(), random_inputs(1, 1, 3, 50), random_inputs(2, 5, 20, 77)]
    for inputs in cases:  # several batch and length buckets
        outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
        outputs = {k: v.numpy() for k, v in outputs.items()}
        check_against_keras(model, inputs, outputs, exact_argmax=kind == "plain")


def must_compile_functions(path: pathlib.Path) -> list[str]:
    """Names of the SavedModel's functions marked `_XlaMustCompile = true`."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    library = saved_model.meta_graphs[0].graph_def.library
    return [f.signature.name for f in library.function if f.attr["_XlaMustCompile"].b]


def test_xla_marks_the_model_stages(exports):
    """The XLA export's stages are saved as must-compile functions; the plain one's are not."""
    names = must_compile_functions(exports["xla"])
    for stage in ("encoder", "_match_direction", "localizer", "_decode"):
        assert any(f"__inference_{stage}_" in name for name in names), (stage, names)
    assert must_compile_functions(exports["plain"]) == []


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("video_reloc", "tfds_activitynet_reloc"):
                raise ImportError(f"{name} is blocked: the SavedModel must stand alone")
            return None

    sys.meta_path.insert(0, Block())
    sys.path = [p for p in sys.path if p not in ("", REPO)]
    import numpy as np
    import tensorflow as tf

    try:
        import video_reloc  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("video_reloc was importable")
    inputs = dict(np.load(sys.argv[1]))
    for path in sys.argv[2:]:
        signature = tf.saved_model.load(path).signatures["serving_default"]
        outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
        print("RESULT " + json.dumps({k: v.numpy().tolist() for k, v in outputs.items()}))
    """
)


@pytest.mark.slow
def test_fresh_process_without_the_package(model, exports, tmp_path):
    inputs = make_inputs()
    kinds = ("xla", "plain")
    found = fresh_process_outputs([exports[kind] for kind in kinds], inputs, tmp_path)
    for kind, outputs in zip(kinds, found):
        check_against_keras(model, inputs, outputs, exact_argmax=kind == "plain")


def fresh_process_outputs(saved_models, inputs, tmp_path) -> list[dict[str, np.ndarray]]:
    """Each SavedModel's outputs on `inputs`, in one process that cannot import this package."""
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = tmp_path / "run_saved_model.py"
    script.write_text(FRESH_PROCESS_SCRIPT.replace("REPO)", f"{str(REPO_ROOT)!r})"))
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(tmp_path / "inputs.npz"), *map(str, saved_models)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [x[len("RESULT ") :] for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    assert len(lines) == len(saved_models), result.stdout[-3000:]
    return [{k: np.asarray(v) for k, v in json.loads(line).items()} for line in lines]


def _saved_model_cli() -> str:
    path = pathlib.Path(sys.executable).with_name("saved_model_cli")
    if not path.exists():
        pytest.skip("saved_model_cli is not installed next to this Python")
    return str(path)


@pytest.mark.slow
def test_saved_model_cli_show_and_run(model, exports, tmp_path):
    cli = _saved_model_cli()
    path = str(exports["plain"])  # the XLA version runs in the fresh process above
    show = subprocess.run(
        [cli, "show", "--dir", path, "--all"], capture_output=True, text=True, timeout=300
    )
    assert show.returncode == 0, show.stderr[-3000:]
    assert "signature_def['serving_default']" in show.stdout
    for name in ("query", "query_length", "reference", "reference_length"):
        assert f"inputs['{name}']" in show.stdout
    for name in ("start", "end", "score", "probabilities", "attention"):
        assert f"outputs['{name}']" in show.stdout
    assert "shape: (-1, -1, 12)" in show.stdout

    inputs = make_inputs()
    for name, value in inputs.items():
        np.save(tmp_path / f"{name}.npy", value)
    outdir = tmp_path / "out"
    run = subprocess.run(
        [
            cli,
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            ";".join(f"{name}={tmp_path / name}.npy" for name in inputs),
            "--outdir",
            str(outdir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = {p.stem: np.load(p) for p in outdir.glob("*.npy")}
    assert sorted(outputs) == ["attention", "end", "probabilities", "score", "start"]
    check_against_keras(model, inputs, outputs, exact_argmax=True)
