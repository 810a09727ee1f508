"""Tests of the REST server: TensorFlow Serving's API, its formats, bad requests, concurrency."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from net import free_ports, request
from small_model_spec import FEATURE_DIM
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from video_reloc.decode import segment_scores
from video_reloc.serving import (
    BatchingParameters,
    ConfigError,
    ModelConfig,
    MonitoringConfig,
    load_models,
    parse_batching_parameters,
    parse_model_config,
    parse_monitoring_config,
    start_server,
)

SIZE_LIMIT = 20_000


@pytest.fixture(scope="module")
def model(small_model):
    return small_model


@pytest.fixture(scope="module")
def base_path(copy_small_export, tmp_path_factory):
    """Versions 1 and 2 of the model (without XLA, so the tests compile nothing)."""
    return copy_small_export(tmp_path_factory.mktemp("serving") / "reloc", 1, 2)


@pytest.fixture(scope="module")
def server(base_path):
    models = load_models([ModelConfig("reloc", str(base_path))], BatchingParameters())
    server = start_server(models, port=0, host="127.0.0.1")
    small = start_server(models, port=0, host="127.0.0.1", max_request_bytes=SIZE_LIMIT)
    yield {"url": f"http://127.0.0.1:{server.port}", "small": f"http://127.0.0.1:{small.port}"}
    server.shutdown()
    small.shutdown()


def make_pair(seed: int, query_steps: int = 6, reference_steps: int = 30):
    rng = np.random.default_rng(seed)
    return {
        "query": rng.standard_normal((query_steps, FEATURE_DIM)).astype("float32"),
        "query_length": query_steps - seed % 3,
        "reference": rng.standard_normal((reference_steps, FEATURE_DIM)).astype("float32"),
        "reference_length": reference_steps - seed % 5,
    }


def columnar(pairs) -> dict:
    return {
        "inputs": {
            name: np.stack([np.asarray(p[name]) for p in pairs]).tolist() for name in pairs[0]
        }
    }


def keras_answers(model, pairs):
    """The Keras model's probabilities, attention and Eq. (12) scores for each pair.

    One padded batch (the model never lets padding change a valid step), cut back per pair.
    """
    query_steps = max(len(p["query"]) for p in pairs)
    reference_steps = max(len(p["reference"]) for p in pairs)
    inputs = {
        "query": np.stack([pad(p["query"], query_steps) for p in pairs]),
        "query_length": np.array([p["query_length"] for p in pairs], "int32"),
        "reference": np.stack([pad(p["reference"], reference_steps) for p in pairs]),
        "reference_length": np.array([p["reference_length"] for p in pairs], "int32"),
    }
    outputs = model(inputs, training=False, return_attention=True)
    scores = segment_scores(outputs["log_probabilities"], inputs["reference_length"]).numpy()
    probabilities = np.exp(outputs["log_probabilities"].numpy())
    attention = outputs["attention"].numpy()
    return [
        (
            probabilities[b, : len(p["reference"])],
            attention[b, : len(p["reference"]), : len(p["query"])],
            scores[b],
        )
        for b, p in enumerate(pairs)
    ]


def pad(array, steps):
    return np.pad(array, [(0, steps - len(array)), (0, 0)])


def check_pair(pair, prediction, expected):
    """A prediction for one pair equals the Keras model's (Eq. 12's argmax up to near-ties)."""
    probabilities, attention, scores = expected
    np.testing.assert_allclose(prediction["probabilities"], probabilities, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(prediction["attention"], attention, atol=1e-5)
    start, end = int(prediction["start"]), int(prediction["end"])
    assert 0 <= start < end <= pair["reference_length"]
    np.testing.assert_allclose(scores[end - start - 1, start], scores.max(), rtol=1e-5)
    np.testing.assert_allclose(prediction["score"], scores.max(), rtol=1e-5)


def test_model_status(server):
    status, body = request(server["url"] + "/v1/models/reloc")
    assert status == 200
    assert body == {
        "model_version_status": [
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert request(server["url"] + "/v1/models/reloc/versions/2")[0] == 200


def test_metadata(server):
    status, body = request(server["url"] + "/v1/models/reloc/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "reloc", "signature_name": "", "version": "2"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    query = signature["inputs"]["query"]
    assert query["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in query["tensor_shape"]["dim"]] == ["-1", "-1", "12"]
    assert signature["inputs"]["query_length"]["dtype"] == "DT_INT32"
    assert sorted(signature["outputs"]) == ["attention", "end", "probabilities", "score", "start"]
    assert signature["outputs"]["start"]["dtype"] == "DT_INT32"


def test_predict_columnar(server, model):
    pairs = [make_pair(seed) for seed in range(3)]
    status, body = request(server["url"] + "/v1/models/reloc:predict", json.dumps(columnar(pairs)))
    assert status == 200, body
    outputs = body["outputs"]
    assert sorted(outputs) == ["attention", "end", "probabilities", "score", "start"]
    assert np.asarray(outputs["probabilities"]).shape == (3, 30, 4)
    assert np.asarray(outputs["attention"]).shape == (3, 30, 6)
    for b, (pair, expected) in enumerate(zip(pairs, keras_answers(model, pairs))):
        check_pair(pair, {k: np.asarray(v[b]) for k, v in outputs.items()}, expected)


def test_predict_row_format_with_different_lengths(server, model):
    pairs = [make_pair(0, 6, 30), make_pair(1, 4, 45), make_pair(2, 9, 12)]
    instances = [{k: np.asarray(v).tolist() for k, v in p.items()} for p in pairs]
    url = server["url"] + "/v1/models/reloc/versions/2:predict"
    status, body = request(
        url, json.dumps({"signature_name": "serving_default", "instances": instances})
    )
    assert status == 200, body
    predictions = body["predictions"]
    assert len(predictions) == 3
    for pair, prediction, expected in zip(pairs, predictions, keras_answers(model, pairs)):
        steps = len(pair["reference"]), len(pair["query"])
        assert np.asarray(prediction["attention"]).shape == steps
        assert np.asarray(prediction["probabilities"]).shape == (steps[0], 4)
        check_pair(pair, {k: np.asarray(v) for k, v in prediction.items()}, expected)


def _valid() -> dict:
    return {"instances": [{k: np.asarray(v).tolist() for k, v in make_pair(0).items()}]}


def _with(field: str, value) -> str:
    body = _valid()
    body["instances"][0][field] = value
    return json.dumps(body)


def _columnar_with(field: str, value) -> str:
    body = columnar([make_pair(0), make_pair(1)])
    body["inputs"][field] = value
    return json.dumps(body)


BAD_REQUESTS = {
    "wrong feature dimension": (
        _with("query", np.zeros((6, 11)).tolist()),
        "instances[0].query: feature dimension",
    ),
    "columnar wrong dimension": (
        _columnar_with("reference", np.zeros((2, 30, 13)).tolist()),
        "inputs.reference: feature dimension",
    ),
    "NaN": (_with("query", [[math.nan] * 12] * 6), "instances[0].query: NaN"),
    "infinite": (
        _with("reference", [[math.inf] * 12] * 30),
        "instances[0].reference: NaN or infinite",
    ),
    "beyond float32": (
        _with("reference", [[1e300] * 12] * 30),
        "instances[0].reference: NaN or infinite",
    ),
    "empty query": (_with("query", []), "instances[0].query: empty"),
    "empty reference": (_columnar_with("reference", [[], []]), "inputs.reference: empty"),
    "query length beyond": (_with("query_length", 7), "instances[0].query_length"),
    "reference length beyond": (
        _columnar_with("reference_length", [30, 31]),
        "inputs.reference_length[1]",
    ),
    "zero length": (_with("reference_length", 0), "instances[0].reference_length"),
    "negative length": (_with("query_length", -1), "instances[0].query_length"),
    "string features": (_with("query", [["a"] * 12] * 6), "instances[0].query: wrong type"),
    "float length": (_with("query_length", 3.5), "instances[0].query_length: wrong type"),
    "string length": (_with("query_length", "3"), "instances[0].query_length: wrong type"),
    "bool length": (_with("query_length", True), "instances[0].query_length: wrong type"),
    "true among features": (
        _with("query", [[True] + [0.0] * 11] + [[0.0] * 12] * 5),
        "instances[0].query: wrong type; expected numbers (float32), got a JSON true or false",
    ),
    "false among columnar features": (
        _columnar_with("reference", [[[0.5] * 12] * 29 + [[0.5] * 11 + [False]]] * 2),
        "inputs.reference: wrong type",
    ),
    "bool among lengths": (_columnar_with("query_length", [6, True]), "inputs.query_length"),
    "object features": (_with("query", {"a": 1}), "instances[0].query"),
    "ragged features": (
        _with("query", [[0.0] * 12, [0.0] * 11]),
        "instances[0].query: not a rectangular",
    ),
    "length as list": (
        _with("query_length", [6]),
        "instances[0].query_length: expected 0 dimension",
    ),
    "missing input": (json.dumps({"instances": [{"query": [[0.0] * 12]}]}), "missing input"),
    "unknown input": (_with("extra", 1), "unknown input(s) ['extra']"),
    "batch mismatch": (_columnar_with("query_length", [6]), "batch sizes differ"),
    "both formats": (json.dumps({**_valid(), "inputs": {}}), "exactly one of"),
    "neither format": (json.dumps({"signature_name": "serving_default"}), "exactly one of"),
    "empty instances": (json.dumps({"instances": []}), "instances: expected a non-empty list"),
    "unknown signature": (json.dumps({**_valid(), "signature_name": "nope"}), "signature_name"),
    "not JSON": ("{instances: [", "body: not valid JSON"),
    "not an object": ("[1, 2]", "body: expected a JSON object"),
    "empty body": (b"", "body: empty"),
    "deep nesting": ("[" * 100_000 + "]" * 100_000, "body"),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_requests_get_400_naming_the_field(server, name):
    body, expected = BAD_REQUESTS[name]
    status, answer = request(server["url"] + "/v1/models/reloc:predict", body)
    assert status == 400, answer
    assert expected in answer["error"], answer["error"]


def test_body_over_the_size_limit(server):
    body = json.dumps(
        {"instances": [{k: np.asarray(v).tolist() for k, v in make_pair(0, 30, 100).items()}]}
    )
    assert len(body) > SIZE_LIMIT
    status, answer = request(server["small"] + "/v1/models/reloc:predict", body)
    assert status == 413
    assert answer["error"] == f"body: over the limit of {SIZE_LIMIT} bytes"
    # A small request on the same server still works.
    status, _ = request(server["small"] + "/v1/models/reloc:predict", json.dumps(_valid()))
    assert status == 200


def test_body_over_the_size_limit_chunked(server):
    """Without a Content-Length, the limit holds while reading: HTTP 413, in JSON."""
    host, port = server["small"].removeprefix("http://").split(":")
    payload = b"[" + b"0," * SIZE_LIMIT + b"0]"
    answer = bytearray()

    def read_answer(sock):
        # Reads while the body is still being sent: the server answers as soon as the limit is
        # passed and closes, and a reset that arrives before the answer is read discards it.
        try:
            while b"\r\n\r\n" not in answer and (data := sock.recv(65536)):
                answer.extend(data)
        except ConnectionResetError:
            pass

    with socket.create_connection((host, int(port)), timeout=60) as sock:
        reader = threading.Thread(target=read_answer, args=(sock,))
        reader.start()
        sock.sendall(
            b"POST /v1/models/reloc:predict HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        )
        try:
            for start in range(0, len(payload), 4096):
                if b"\r\n\r\n" in answer:
                    break
                chunk = payload[start : start + 4096]
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered as soon as the limit was passed, and closed
        reader.join(60)
    answer = bytes(answer)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"application/json" in answer


@pytest.mark.parametrize(
    "path, method",
    [
        ("/v1/models/nope", "GET"),
        ("/v1/models/nope/metadata", "GET"),
        ("/v1/models/nope:predict", "POST"),
        ("/v1/models/reloc/versions/1", "GET"),
        ("/v1/models/reloc/versions/7:predict", "POST"),
        ("/v1/models/reloc/versions/x/metadata", "GET"),
        ("/v1/models/reloc/labels/stable", "GET"),
        ("/v2/unknown", "GET"),
    ],
)
def test_unknown_model_or_version_is_404(server, path, method):
    status, answer = request(
        server["url"] + path, json.dumps(_valid()) if method == "POST" else None
    )
    assert status == 404
    assert answer["error"]


def test_other_verbs_are_refused(server):
    status, answer = request(server["url"] + "/v1/models/reloc:classify", json.dumps(_valid()))
    assert status == 400 and ":classify" in answer["error"]


def test_32_concurrent_clients(server, model):
    pairs = [make_pair(seed, 4 + seed % 5, 20 + seed) for seed in range(32)]
    bodies = [
        json.dumps({"instances": [{k: np.asarray(v).tolist() for k, v in p.items()}]})
        for p in pairs
    ]
    results = [None] * 32
    barrier = threading.Barrier(32)

    def client(index):
        barrier.wait()
        results[index] = request(server["url"] + "/v1/models/reloc:predict", bodies[index])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for pair, (status, body), expected in zip(pairs, results, keras_answers(model, pairs)):
        assert status == 200, body
        check_pair(pair, {k: np.asarray(v) for k, v in body["predictions"][0].items()}, expected)
    assert request(server["url"] + "/v1/models/reloc")[0] == 200


def test_parse_model_config():
    configs = parse_model_config(
        """
        # two models
        model_config_list {
          config { name: 'a' base_path: "/models/a" model_platform: "tensorflow" }
          config {
            name: "b"
            base_path: '/models/b'
            model_version_policy { specific { versions: 1 versions: 3 } }
          }
          config: { name: "c", base_path: "/c", model_version_policy: { all: {} } }
          config { name: "d" base_path: "/d" model_version_policy { latest { num_versions: 2 } } }
        }
        """
    )
    assert configs == [
        ModelConfig("a", "/models/a"),
        ModelConfig("b", "/models/b", versions=(1, 3)),
        ModelConfig("c", "/c", num_latest=0),
        ModelConfig("d", "/d", num_latest=2),
    ]


def test_parse_model_config_labels():
    [config] = parse_model_config(
        "model_config_list { config { name: 'a' base_path: '/a' "
        "model_version_policy { specific { versions: [1, 2] } } "
        "version_labels { key: 'stable' value: 1 } version_labels { key: 'canary' value: 2 } } }"
    )
    assert config == ModelConfig("a", "/a", (1, 2), 1, {"stable": 1, "canary": 2})


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "model_config_list { config { name: 'a' base_path: '/a' }",
            'models.config:1:56: Expected "}".',
        ),
        (
            "model_config_list {\n config { name: 'a' bas_path: '/a' } }",
            'models.config:2:21: Message type "tensorflow.serving.ModelConfig" has no field '
            'named "bas_path".',
        ),
        ("model_config_list { config { name: 'a' } }", "config #1 (a): needs a base_path"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'onnx' } }",
            "model_platform 'onnx' is not 'tensorflow'",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a' }"
            " config { name: 'a' base_path: '/b' } }",
            "used twice",
        ),
        ("model_config_list {\n\n config { name: @ } }", "models.config:3:17:"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' model_version_policy "
            "{ specific { versions: 1 } } version_labels { key: 'b' value: 2 } } }",
            "label 'b' points at version 2",
        ),
        ("", "no model configured"),
    ],
)
def test_parse_model_config_errors(text, message):
    with pytest.raises(ConfigError) as error:
        parse_model_config(text, source="models.config")
    assert message in str(error.value)


def test_parse_batching_parameters():
    parameters = parse_batching_parameters(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 500 }\n"
        "num_batch_threads { value: 2 }\npad_variable_length_inputs: true\n"
        "allowed_batch_sizes: [4, 16]"
    )
    assert parameters == BatchingParameters(16, 500, 100, 2)
    assert parse_batching_parameters("") == BatchingParameters()
    with pytest.raises(
        ConfigError, match=r"^batch.config:2:1: .*no field named \"max_batch_sise\""
    ):
        parse_batching_parameters("\nmax_batch_sise { value: 16 }", "batch.config")
    with pytest.raises(ConfigError, match="batch.config:1:25: .*Couldn't parse integer"):
        parse_batching_parameters('max_batch_size { value: "16" }', "batch.config")
    with pytest.raises(ConfigError, match="max_batch_size must be at least 1, not 0"):
        parse_batching_parameters("max_batch_size { value: 0 }")


def test_parse_monitoring_config():
    assert parse_monitoring_config(
        'prometheus_config { enable: true, path: "/metrics" }'
    ) == MonitoringConfig(True, "/metrics")
    assert parse_monitoring_config("prometheus_config { enable: true }") == MonitoringConfig(
        True, "/monitoring/prometheus/metrics"
    )
    assert not parse_monitoring_config("").prometheus_enabled
    with pytest.raises(ConfigError, match='mon.config:1:34: .*no field named "paht"'):
        parse_monitoring_config('prometheus_config { enable: true paht: "/m" }', "mon.config")
    with pytest.raises(ConfigError, match="outside /v1/"):
        parse_monitoring_config('prometheus_config { enable: true path: "/v1/models/x" }')


def test_load_models_errors(base_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="pass its parent"):
        load_models([ModelConfig("x", str(base_path / "1"))])
    with pytest.raises(FileNotFoundError, match=r"versions \[5\] not found"):
        load_models([ModelConfig("x", str(base_path), versions=(1, 5))])
    with pytest.raises(FileNotFoundError, match="no numeric version"):
        load_models([ModelConfig("x", str(tmp_path))])


@pytest.mark.slow
def test_serve_binary_with_model_config_file(base_path, tmp_path):
    """The console script serves two models from TensorFlow Serving's config files, over REST
    and gRPC, with metrics; serving imports no training."""
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'latest' base_path: '{base_path}' model_platform: 'tensorflow' }}\n"
        f"  config {{ name: 'both' base_path: '{base_path}'\n"
        "    model_version_policy { specific { versions: 1 versions: 2 } } }\n"
        "}\n"
    )
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n")
    port, grpc_port = free_ports(2)
    code = (
        "import sys\n"
        "from video_reloc.cli import serve\n"
        "bad = [m for m in sys.modules if m.startswith(('video_reloc.training', 'video_reloc.data',"
        " 'tfds_activitynet_reloc', 'tensorflow_datasets'))]\n"
        "assert not bad, bad\n"
        "sys.argv = ['serve', '--rest_api_host=127.0.0.1', '--grpc_host=127.0.0.1', "
        f"'--rest_api_port={port}', '--port={grpc_port}', '--model_config_file={config}', "
        f"'--monitoring_config_file={monitoring}', '--batching_parameters_file={batching}']\n"
        "serve.run()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:  # the APIs answer while the models load: until all are AVAILABLE
            assert process.poll() is None, process.stdout.read()
            try:
                status, body = request(url + "/v1/models/both", timeout=5)
                states = [v["state"] for v in body.get("model_version_status", [])]
                if status == 200 and states == ["AVAILABLE"] * 2:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        assert [v["version"] for v in body["model_version_status"]] == ["2", "1"]
        status, body = request(url + "/v1/models/latest")
        assert [v["version"] for v in body["model_version_status"]] == ["2"]
        status, body = request(url + "/v1/models/both/versions/1:predict", json.dumps(_valid()))
        assert status == 200 and len(body["predictions"]) == 1
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = "both"
            response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                status_request, timeout=60
            )
        assert [s.version for s in response.model_version_status] == [2, 1]
        with urllib.request.urlopen(url + "/metrics", timeout=60) as answer:
            metrics = answer.read().decode()
        assert 'video_reloc_serving_requests_total{api="predict",entrypoint="REST"' in metrics
    finally:
        process.terminate()
        process.wait(timeout=30)
