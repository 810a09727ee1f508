"""Tests of the SavedModel warm-up: the export's TensorFlow Serving file and the server's load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from small_model_spec import FEATURE_DIM
from tensorflow_serving.apis import prediction_log_pb2

from video_reloc.export import bucket_warmup_shapes, default_warmup_shapes, export_saved_model
from video_reloc.serving import ModelConfig, load_models
from video_reloc.warmup import (
    WARMUP_REQUESTS_PATH,
    WarmupRequest,
    WarmupShape,
    make_request,
    read_warmup_requests,
    write_warmup_requests,
)

WARMED = [WarmupShape(1, 16, 50), WarmupShape(1, 16, 100)]


@pytest.fixture(scope="module")
def model(small_model):
    return small_model


@pytest.fixture(scope="module")
def xla_base(model, tmp_path_factory):
    """An XLA export whose warm-up file holds two buckets: (16, 50) and (16, 100)."""
    base = tmp_path_factory.mktemp("warmup") / "xla"
    export_saved_model(model, base, jit_compile=True, warmup_shapes=WARMED)
    return base


@pytest.fixture(scope="module")
def plain_base(copy_small_export, tmp_path_factory):
    return copy_small_export(tmp_path_factory.mktemp("warmup") / "plain", 1)


def test_default_shapes_cover_every_bucket_of_one_pair():
    shapes = bucket_warmup_shapes()
    assert len(shapes) == 24
    assert {s.batch for s in shapes} == {1}
    assert sorted({s.query_steps for s in shapes}) == [16, 32, 48, 64]
    assert sorted({s.reference_steps for s in shapes}) == [50, 100, 150, 200, 250, 300]
    assert default_warmup_shapes(jit_compile=True) == shapes
    assert default_warmup_shapes(jit_compile=False) == [WarmupShape(1, 16, 50)]
    # Sizes go to their buckets: batch 3 pads to 4, 70 rows to 128; 20 steps to 32, 101 to 150.
    assert bucket_warmup_shapes(20, 101, batch_sizes=(1, 3, 4, 70)) == [
        WarmupShape(b, q, r) for b in (1, 4, 128) for q in (16, 32) for r in (50, 100, 150)
    ]


@pytest.mark.parametrize(
    "text, shape",
    [("32x300", WarmupShape(1, 32, 300)), ("4x16x50", WarmupShape(4, 16, 50)), ("8:9", (1, 8, 9))],
)
def test_warmup_shape_parse(text, shape):
    assert WarmupShape.parse(text) == shape


@pytest.mark.parametrize("text", ["32", "0x50", "1x2x3x4", "ax50", ""])
def test_warmup_shape_parse_refuses(text):
    with pytest.raises(ValueError, match="QUERYxREFERENCE"):
        WarmupShape.parse(text)


def test_export_writes_tf_serving_warmup_requests(xla_base, plain_base):
    requests = read_warmup_requests(xla_base / "1")
    assert [r.describe() for r in requests] == [str(s) for s in WARMED]
    first = requests[0]
    assert first.signature_name == "serving_default"
    assert first.inputs["query"].shape == (1, 16, FEATURE_DIM)
    assert first.inputs["query"].dtype == np.float32 and not first.inputs["query"].any()
    assert first.inputs["reference"].shape == (1, 50, FEATURE_DIM)
    np.testing.assert_array_equal(first.inputs["query_length"], np.array([16], np.int32))
    np.testing.assert_array_equal(first.inputs["reference_length"], np.array([50], np.int32))
    # Without XLA: one small request.
    [plain] = read_warmup_requests(plain_base / "1")
    assert plain.describe() == "batch 1, query 16, reference 50"
    # Each record is TensorFlow Serving's own PredictionLog, as its model server reads it.
    record = next(iter(tf.data.TFRecordDataset(str(xla_base / "1" / WARMUP_REQUESTS_PATH))))
    record = record.numpy()
    log = prediction_log_pb2.PredictionLog.FromString(record)
    assert log.WhichOneof("log_type") == "predict_log"
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert sorted(request.inputs) == ["query", "query_length", "reference", "reference_length"]
    np.testing.assert_array_equal(
        tf.make_ndarray(request.inputs["reference"]), np.zeros((1, 50, 12))
    )
    assert len(record) < 400  # constant inputs are stored as one value, not 1 x 50 x D floats


def test_no_warmup_file_when_asked(model, tmp_path):
    path = export_saved_model(model, tmp_path, jit_compile=False, warmup_shapes=[])
    assert read_warmup_requests(path) is None
    assert not (path / "assets.extra").exists()


def test_requests_round_trip_any_values(tmp_path):
    rng = np.random.default_rng(0)
    request = WarmupRequest(
        "other",
        {
            "x": rng.standard_normal((2, 3, 4)).astype(np.float32),
            "n": np.array([3, 1], np.int32),
            "c": np.full((2, 5), 7, np.int64),
        },
    )
    write_warmup_requests(tmp_path, [request, make_request(WarmupShape(2, 3, 4), 5)])
    first, second = read_warmup_requests(tmp_path)
    assert first.signature_name == "other"
    for name, array in request.inputs.items():
        assert first.inputs[name].dtype == array.dtype
        np.testing.assert_array_equal(first.inputs[name], array)
    assert second.describe() == "batch 2, query 3, reference 4"
    with pytest.raises(ValueError, match="1 to 1000"):
        write_warmup_requests(tmp_path, [])


def test_records_that_are_not_predict_logs_are_refused(tmp_path):
    path = tmp_path / WARMUP_REQUESTS_PATH
    path.parent.mkdir(parents=True)
    classify = prediction_log_pb2.PredictionLog()
    classify.classify_log.request.model_spec.name = "x"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(classify.SerializeToString())
    with pytest.raises(ValueError, match="record 0 is not a predict log"):
        read_warmup_requests(tmp_path)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(b"\xff\xff\xff")
    with pytest.raises(ValueError, match="record 0 is not a PredictionLog"):
        read_warmup_requests(tmp_path)


def test_load_warms_up_before_returning_and_the_flag_turns_it_off(plain_base):
    served = load_models([ModelConfig("reloc", str(plain_base))])["reloc"][1]
    assert served.warmup_seconds is not None
    served = load_models([ModelConfig("reloc", str(plain_base))], enable_model_warmup=False)
    assert served["reloc"][1].warmup_seconds is None


def test_a_failing_warmup_request_fails_the_load(plain_base, tmp_path):
    """As in TensorFlow Serving, a version whose warm-up fails is not served."""
    base = tmp_path / "bad"
    shutil.copytree(plain_base / "1", base / "1")
    write_warmup_requests(base / "1", [make_request(WarmupShape(1, 16, 50), FEATURE_DIM + 1)])
    with pytest.raises(RuntimeError, match=r"warm-up request 1 \(batch 1, query 16, reference 50"):
        load_models([ModelConfig("reloc", str(base))])
    # Without warm-up, the same version loads.
    assert load_models([ModelConfig("reloc", str(base))], enable_model_warmup=False)["reloc"]


XLA_COMPILES_SCRIPT = textwrap.dedent(
    """
    import json, logging, os, re, sys

    import numpy as np

    from video_reloc.serving import ModelConfig, load_models
    from video_reloc.warmup import WarmupShape

    base, dump, dim = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.basicConfig(level=logging.INFO)


    def compiled():
        # XLA dumps each module it compiles as files module_NNNN.<name>.*. Each (query,
        # reference) shape compiles the two matching directions once: count those modules.
        names = os.listdir(dump) if os.path.isdir(dump) else []
        pattern = r"(module_\\d+)\\.[^.]*_match_direction_"
        return len({m.group(1) for n in names if (m := re.match(pattern, n))}) // 2


    def predict(served, query_steps, reference_steps):
        rng = np.random.default_rng(query_steps * 1000 + reference_steps)
        inputs = {
            "query": rng.standard_normal((1, query_steps, dim)).astype("float32"),
            "query_length": np.array([query_steps], "int32"),
            "reference": rng.standard_normal((1, reference_steps, dim)).astype("float32"),
            "reference_length": np.array([reference_steps - 1], "int32"),
        }
        outputs = served.predict("serving_default", inputs, 300.0)
        assert outputs["probabilities"].shape == (1, reference_steps, 4)


    counts = {}
    off = load_models([ModelConfig("off", base)], enable_model_warmup=False)
    counts["off"] = compiled()
    shapes = [WarmupShape(1, 16, 150)]
    custom = load_models([ModelConfig("custom", base)], model_warmup_shapes=shapes)
    counts["custom"] = compiled()
    on = load_models([ModelConfig("on", base)])["on"][1]
    counts["on"] = compiled()
    for steps in [(7, 30), (16, 100), (9, 61), (16, 50)]:  # buckets (16, 50) and (16, 100)
        predict(on, *steps)
    counts["warmed"] = compiled()
    predict(on, 20, 30)  # bucket (32, 50): not warmed up
    counts["cold"] = compiled()
    print("COUNTS " + json.dumps(counts))
    """
)


@pytest.mark.slow
def test_requests_at_warmed_shapes_compile_nothing(xla_base, tmp_path):
    """Counts XLA compilations (modules XLA dumps) in a fresh process, not wall-clock time."""
    script = tmp_path / "count_compiles.py"
    script.write_text(XLA_COMPILES_SCRIPT)
    dump = tmp_path / "xla_dump"
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_dump_to={dump}".strip()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    result = subprocess.run(
        [sys.executable, str(script), str(xla_base), str(dump), str(FEATURE_DIM)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("COUNTS "))
    counts = json.loads(line[len("COUNTS ") :])
    assert counts == {
        "off": 0,  # --noenable_model_warmup: loading compiles nothing
        "custom": 1,  # --model_warmup_shapes=16x150: that bucket only
        "on": 3,  # the export's warm-up file: (16, 50) and (16, 100)
        "warmed": 3,  # requests in warmed buckets compile nothing more
        "cold": 4,  # a request in another bucket compiles it (what the warm-up spares)
    }, result.stderr[-3000:]
    assert "Warmed up model on version 1: 2 request(s)" in result.stderr
