"""Tests that slow or stalled clients cannot hold the server (both APIs).

A smaller run of `benchmarks/benchmark_serving.py --stalls` (60 stalled connections, 64
requests from 32 clients): 20 connections send half a request and stall while 8 clients send
16 requests, through a server of 4 REST threads. Nothing asserts wall-clock speed; every
request must be answered, and the server must close the stalled connections itself.
"""

from __future__ import annotations

import json
import socket
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from net import concurrent_requests, stalled_connections
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from video_reloc import build_model
from video_reloc.export import export_saved_model
from video_reloc.serving import BatchingParameters, ModelConfig, ModelManager, start_server

FEATURE_DIM = 12
STALLED = 20
CLIENTS = 8
REQUESTS = 16
TIMEOUT_MS = 3000  # --rest_api_timeout_in_ms: stalled connections are closed after this


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = build_model(FEATURE_DIM, units=8, bilinear_rank=2, seed=0)
    base = tmp_path_factory.mktemp("stalls") / "reloc"
    export_saved_model(model, base, jit_compile=False)
    manager = ModelManager(
        [ModelConfig("reloc", str(base))], BatchingParameters(), enable_model_warmup=False
    )
    manager.load()
    server = start_server(
        manager,
        port=0,
        host="127.0.0.1",
        grpc_port=0,
        timeout_ms=TIMEOUT_MS,
        rest_api_num_threads=4,
        grpc_max_threads=4,
        file_system_poll_wait_seconds=0,
    )
    yield server
    server.shutdown()
    manager.close()


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
    url = f"http://127.0.0.1:{server.rest_api_port}/v1/models/reloc:predict"
    stalled = stalled_connections(
        "127.0.0.1", server.rest_api_port, STALLED, "/v1/models/reloc:predict"
    )
    try:
        results = concurrent_requests(url, [body(i) for i in range(REQUESTS)], CLIENTS)
        assert [status for status, _ in results] == [200] * REQUESTS
        # The read timeout: the server closes each stalled connection (within the timeout and
        # a cleanup interval; generous here for a loaded machine).
        start = time.monotonic()
        closed = [closed_by_server(sock, 30.0) for sock in stalled]
        assert all(closed), f"{closed.count(False)} stalled connection(s) still open"
        assert time.monotonic() - start < 30.0
    finally:
        for sock in stalled:
            sock.close()


def test_stalled_grpc_connections_hold_no_worker(server):
    """Raw TCP connections that send half of the HTTP/2 preface and stall."""
    stalled = []
    for _ in range(STALLED):
        sock = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=30)
        sock.sendall(b"PRI * HTTP/2.0\r\n")
        stalled.append(sock)
    try:
        rng = np.random.default_rng(0)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "reloc"
        for name, value in {
            "query": rng.standard_normal((1, 6, FEATURE_DIM)).astype("float32"),
            "query_length": np.array([6], "int32"),
            "reference": rng.standard_normal((1, 30, FEATURE_DIM)).astype("float32"),
            "reference_length": np.array([30], "int32"),
        }.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for _ in range(REQUESTS // 4):
                response = stub.Predict(request, timeout=60)
                assert response.outputs["probabilities"].tensor_shape.dim[1].size == 30
    finally:
        for sock in stalled:
            sock.close()
