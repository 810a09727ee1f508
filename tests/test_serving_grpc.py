"""Tests of the gRPC API with TensorFlow Serving's own client stubs, version labels, metrics,
and stalled clients.

One small export (no XLA) serves as versions 1 and 2 of one model, labelled `stable` and
`canary`, behind one server that speaks both APIs, serves Prometheus metrics, and has 4 threads
per API and a 10 s timeout (`--rest_api_timeout_in_ms`), for the stalled clients: a smaller run
of `benchmarks/benchmark_serving.py` (60 stalled connections, 64 requests from 32 clients),
where 20 connections send half a request and stall while 8 clients send 16 requests. Nothing
asserts wall-clock speed; every request must be answered, and the server must close the
stalled connections itself.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from net import concurrent_requests, request, stalled_connections
from prometheus_client.parser import text_string_to_metric_families
from small_model_spec import FEATURE_DIM
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from video_reloc.serving import (
    BatchingParameters,
    ModelConfig,
    ModelManager,
    MonitoringConfig,
    start_server,
)

METRICS_PATH = "/metrics/prometheus"
TIMEOUT_S = 120
TIMEOUT_MS = 10_000  # --rest_api_timeout_in_ms: stalled connections are closed after this
STALLED = 20
CLIENTS = 8
REQUESTS = 16


@pytest.fixture(scope="module")
def base_path(copy_small_export, tmp_path_factory):
    return copy_small_export(tmp_path_factory.mktemp("grpc") / "reloc", 1, 2)


@pytest.fixture(scope="module")
def server(base_path):
    config = ModelConfig("reloc", str(base_path), (1, 2), 1, {"stable": 1, "canary": 2})
    manager = ModelManager([config], BatchingParameters())  # warmed up: no slow first call
    manager.load()
    server = start_server(
        manager,
        port=0,
        host="127.0.0.1",
        grpc_port=0,
        monitoring=MonitoringConfig(True, METRICS_PATH),
        file_system_poll_wait_seconds=0,
        timeout_ms=TIMEOUT_MS,
        rest_api_num_threads=4,
        grpc_max_threads=4,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield {
        "server": server,
        "url": f"http://127.0.0.1:{server.rest_api_port}",
        "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "models": model_service_pb2_grpc.ModelServiceStub(channel),
    }
    channel.close()
    server.shutdown()
    manager.close()


def make_inputs(seed: int = 0, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "query": rng.standard_normal((batch, 6, FEATURE_DIM)).astype("float32"),
        "query_length": np.array([6, 4, 5, 3][:batch], "int32"),
        "reference": rng.standard_normal((batch, 30, FEATURE_DIM)).astype("float32"),
        "reference_length": np.array([30, 25, 12, 28][:batch], "int32"),
    }


def predict_request(inputs, version=None, label=None, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", "reloc")
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def outputs_of(response) -> dict[str, np.ndarray]:
    return {name: tf.make_ndarray(value) for name, value in response.outputs.items()}


def test_predict_equals_rest_and_the_saved_model(server, base_path):
    inputs = make_inputs()
    response = server["predict"].Predict(predict_request(inputs), timeout=TIMEOUT_S)
    assert response.model_spec.name == "reloc"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    answer = outputs_of(response)
    assert sorted(answer) == ["attention", "end", "probabilities", "score", "start"]

    signature = tf.saved_model.load(str(base_path / "2")).signatures["serving_default"]
    direct = {k: v.numpy() for k, v in signature(**inputs).items()}
    status, rest = request(
        server["url"] + "/v1/models/reloc:predict",
        json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()}}),
    )
    assert status == 200, rest
    for name in answer:
        assert answer[name].dtype == direct[name].dtype
        np.testing.assert_allclose(answer[name], direct[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(answer[name], np.asarray(rest["outputs"][name]), rtol=1e-5)
    np.testing.assert_array_equal(answer["start"], direct["start"])
    np.testing.assert_array_equal(answer["end"], direct["end"])


def test_predict_by_version_and_label_with_output_filter(server):
    inputs = make_inputs(1, batch=1)
    for spec, version in [({"version": 1}, 1), ({"label": "stable"}, 1), ({"label": "canary"}, 2)]:
        request_ = predict_request(inputs, **spec)
        request_.output_filter.extend(["start", "end"])
        response = server["predict"].Predict(request_, timeout=TIMEOUT_S)
        assert response.model_spec.version.value == version
        assert sorted(response.outputs) == ["end", "start"]


def test_get_model_metadata(server):
    request_ = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request_.model_spec.name = "reloc"
    request_.model_spec.version_label = "stable"
    response = server["predict"].GetModelMetadata(request_, timeout=TIMEOUT_S)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert [d.size for d in signature.inputs["query"].tensor_shape.dim] == [-1, -1, FEATURE_DIM]
    assert sorted(signature.outputs) == ["attention", "end", "probabilities", "score", "start"]


def test_get_model_status(server):
    request_ = get_model_status_pb2.GetModelStatusRequest()
    request_.model_spec.name = "reloc"
    response = server["models"].GetModelStatus(request_, timeout=TIMEOUT_S)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (2, available),
        (1, available),
    ]
    assert all(s.status.error_code == 0 for s in response.model_version_status)
    request_.model_spec.version_label = "stable"
    [status] = server["models"].GetModelStatus(request_, timeout=TIMEOUT_S).model_version_status
    assert status.version == 1


def _with(name, value):
    inputs = make_inputs()
    inputs[name] = value
    return inputs


BAD_PREDICTS = {
    "wrong feature dimension": (
        predict_request(_with("query", np.zeros((2, 6, 11), "float32"))),
        "inputs['query']: feature dimension is 11, the model expects 12",
    ),
    "wrong dtype": (
        predict_request(_with("reference", np.zeros((2, 30, 12), "float64"))),
        "inputs['reference']: dtype float64, the signature expects float32",
    ),
    "NaN": (
        predict_request(_with("query", np.full((2, 6, 12), np.nan, "float32"))),
        "inputs['query']: NaN",
    ),
    "length beyond": (
        predict_request(_with("reference_length", np.array([30, 31], "int32"))),
        "inputs['reference_length'][1]: 31 is outside 1..30",
    ),
    "batch mismatch": (
        predict_request(_with("query_length", np.array([6], "int32"))),
        "inputs: batch sizes differ",
    ),
    "missing input": (
        predict_request({k: v for k, v in make_inputs().items() if k != "query"}),
        "inputs: missing input(s) ['query']",
    ),
    "unknown input": (
        predict_request({**make_inputs(), "extra": np.zeros(2, "float32")}),
        "inputs: unknown input(s) ['extra']",
    ),
    "wrong rank": (
        predict_request(_with("query", np.zeros((6, 12), "float32"))),
        "inputs['query']: expected 3 dimension(s)",
    ),
    "unknown signature": (
        predict_request(make_inputs(), signature_name="nope"),
        "model_spec.signature_name: 'nope' is not a signature",
    ),
    "no model name": (predict_request(make_inputs(), name=""), "model_spec.name: empty"),
}


@pytest.mark.parametrize("name", sorted(BAD_PREDICTS))
def test_bad_predicts_are_invalid_argument_naming_the_field(server, name):
    request_, message = BAD_PREDICTS[name]
    with pytest.raises(grpc.RpcError) as error:
        server["predict"].Predict(request_, timeout=TIMEOUT_S)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details(), error.value.details()


def test_unknown_output_filter_and_metadata_field(server):
    request_ = predict_request(make_inputs())
    request_.output_filter.append("segment")
    with pytest.raises(grpc.RpcError) as error:
        server["predict"].Predict(request_, timeout=TIMEOUT_S)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output_filter: unknown output(s) ['segment']" in error.value.details()
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["graph"])
    metadata.model_spec.name = "reloc"
    with pytest.raises(grpc.RpcError) as error:
        server["predict"].GetModelMetadata(metadata, timeout=TIMEOUT_S)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata_field" in error.value.details()


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "nope"}, "model: 'nope' is not served"),
        ({"version": 7}, "version: '7' of model 'reloc' is not served"),
        ({"label": "beta"}, "version_label: 'beta' is not defined for model 'reloc'"),
    ],
)
def test_unknown_model_version_or_label_is_not_found(server, spec, message):
    with pytest.raises(grpc.RpcError) as error:
        server["predict"].Predict(predict_request(make_inputs(), **spec), timeout=TIMEOUT_S)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert message in error.value.details()
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = spec.get("name", "reloc")
    if "version" in spec:
        status.model_spec.version.value = spec["version"]
    if "label" in spec:
        status.model_spec.version_label = spec["label"]
    with pytest.raises(grpc.RpcError) as error:
        server["models"].GetModelStatus(status, timeout=TIMEOUT_S)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_rest_labels(server):
    status, body = request(server["url"] + "/v1/models/reloc/labels/stable")
    assert status == 200
    assert [v["version"] for v in body["model_version_status"]] == ["1"]
    status, body = request(server["url"] + "/v1/models/reloc/labels/canary/metadata")
    assert status == 200 and body["model_spec"]["version"] == "2"
    inputs = {k: v.tolist() for k, v in make_inputs(2, batch=1).items()}
    status, body = request(
        server["url"] + "/v1/models/reloc/labels/stable:predict", json.dumps({"inputs": inputs})
    )
    assert status == 200 and sorted(body["outputs"]) == [
        "attention",
        "end",
        "probabilities",
        "score",
        "start",
    ]
    status, body = request(server["url"] + "/v1/models/reloc/labels/beta")
    assert status == 404 and "'beta' is not defined" in body["error"]


def scrape(url: str) -> dict[str, list]:
    """`{metric family: [samples]}` of the server's Prometheus metrics."""
    with urllib.request.urlopen(url + METRICS_PATH, timeout=60) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def count(samples, name: str, **labels) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_prometheus_metrics(server):
    before = scrape(server["url"])
    inputs = make_inputs(3, batch=3)
    server["predict"].Predict(predict_request(inputs, version=1), timeout=TIMEOUT_S)
    with pytest.raises(grpc.RpcError):
        server["predict"].Predict(predict_request(inputs, name="nope"), timeout=TIMEOUT_S)
    body = json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()}})
    assert request(server["url"] + "/v1/models/reloc:predict", body)[0] == 200
    assert request(server["url"] + "/v1/models/reloc:predict", "{")[0] == 400
    after = scrape(server["url"])

    requests = "video_reloc_serving_requests"
    total = requests + "_total"

    def added(**labels) -> float:
        return count(after[requests], total, **labels) - count(
            before.get(requests, []), total, **labels
        )

    assert added(api="predict", entrypoint="GRPC", model_version="1", status="OK") == 1
    assert added(api="predict", entrypoint="GRPC", model_name="", status="NOT_FOUND") == 1
    assert added(api="predict", entrypoint="REST", model_version="2", status="OK") == 1
    assert added(api="predict", entrypoint="REST", status="INVALID_ARGUMENT") == 1
    latency = after["video_reloc_serving_request_latency_seconds"]
    assert (
        count(
            latency,
            "video_reloc_serving_request_latency_seconds_count",
            model_name="reloc",
            api="predict",
            entrypoint="GRPC",
        )
        >= 1
    )
    batches = after["video_reloc_serving_batch_size"]
    assert count(batches, "video_reloc_serving_batch_size_sum", model_version="1") >= 3
    states = {
        (s.labels["model_version"], s.labels["state"]): s.value
        for s in after["video_reloc_serving_model_version_state"]
    }
    assert states == {("1", "AVAILABLE"): 1, ("2", "AVAILABLE"): 1}


def body(seed: int) -> str:
    rng = np.random.default_rng(seed)
    pair = {
        "query": rng.standard_normal((6, FEATURE_DIM)).tolist(),
        "query_length": 6,
        "reference": rng.standard_normal((30, FEATURE_DIM)).tolist(),
        "reference_length": 30 - seed % 5,
    }
    return json.dumps({"instances": [pair]})


def closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `timeout_s`."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def test_stalled_rest_clients_hold_no_worker(server):
    port = server["server"].rest_api_port
    url = f"http://127.0.0.1:{port}/v1/models/reloc:predict"
    stalled = stalled_connections("127.0.0.1", port, STALLED, "/v1/models/reloc:predict")
    try:
        results = concurrent_requests(url, [body(i) for i in range(REQUESTS)], CLIENTS)
        assert [status for status, _ in results] == [200] * REQUESTS
        # The read timeout: the server closes each stalled connection (within the timeout and
        # a cleanup interval; generous here for a loaded machine).
        start = time.monotonic()
        closed = [closed_by_server(sock, 60.0) for sock in stalled]
        assert all(closed), f"{closed.count(False)} stalled connection(s) still open"
        assert time.monotonic() - start < 60.0
    finally:
        for sock in stalled:
            sock.close()


def test_stalled_grpc_connections_hold_no_worker(server):
    """Raw TCP connections that send half of the HTTP/2 preface and stall."""
    stalled = []
    for _ in range(STALLED):
        sock = socket.create_connection(("127.0.0.1", server["server"].grpc_port), timeout=30)
        sock.sendall(b"PRI * HTTP/2.0\r\n")
        stalled.append(sock)
    try:
        for seed in range(REQUESTS // 4):
            response = server["predict"].Predict(
                predict_request(make_inputs(seed, batch=1)), timeout=60
            )
            assert response.outputs["probabilities"].tensor_shape.dim[1].size == 30
    finally:
        for sock in stalled:
            sock.close()
