"""Prints serving speed through the exported SavedModel on this machine.

    python benchmarks/benchmark_serving.py [--repeats 30] [--skip_plain] [--skip_rest]
    python benchmarks/benchmark_serving.py --api_only     # REST vs gRPC, stalled clients

- Latency: one pair, query 32 and reference 300 features (D = 500, l = 128), through
  `tf.saved_model.load(...).signatures["serving_default"]`, median over `--repeats` calls
  after warm-up (XLA compiles each new padded shape once, on its first call).
- Throughput: batches of 64 such pairs.
- REST and gRPC: the same single pair as a JSON request and as a `PredictRequest` of
  TensorFlow Serving's stubs to one in-process server (adds the coding of each API).
- Stalled clients: `--stalled` connections (60) send half a request and stall while
  `--clients` (32) clients send `--requests` (64) requests of one pair each over REST; prints
  how many were answered and their latencies, beside the same load without stalled clients.
- Relocalization: one query of 32 against references of 300, 3,000 and 30,000 features
  (windows of 300 every 150, batches of 64).

Both exports are measured: with XLA (`jit_compile=True`, the default) and without.
`--reference` also measures the XLA latency of `unhoisted_reference.py`, the plain
implementation issue 2 quotes at 24 ms on the 2-core CPU of the 15 ms target, and prints the
target scaled to this machine.
"""

from __future__ import annotations

# First, as in the binaries: the BFC CPU allocator unless the environment says otherwise.
import video_reloc_bin.startup  # noqa: F401 - TensorFlow reads its settings at start

# isort: split
import argparse
import json
import logging
import os
import pathlib
import sys
import tempfile
import time
import urllib.request

import grpc
import numpy as np
import tensorflow as tf
from benchmark_model import YARDSTICK_XLA_MS, benchmark_inference, median_seconds
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from video_reloc import build_model
from video_reloc.export import export_saved_model
from video_reloc.relocalize import load_predictor, relocalize
from video_reloc.serving import BatchingParameters, ModelConfig, load_models, start_server

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from net import concurrent_requests, stalled_connections  # noqa: E402 - the tests' helpers

LATENCY_TARGET_MS = 15.0
FEATURE_DIM = 500


def _batch(batch: int, query_steps: int, reference_steps: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "query": tf.constant(rng.standard_normal((batch, query_steps, FEATURE_DIM)), tf.float32),
        "query_length": tf.fill([batch], query_steps),
        "reference": tf.constant(
            rng.standard_normal((batch, reference_steps, FEATURE_DIM)), tf.float32
        ),
        "reference_length": tf.fill([batch], reference_steps),
    }


def _median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    return median_seconds(fn, repeats)


def benchmark_signature(path: str, repeats: int) -> dict[str, float]:
    signature = tf.saved_model.load(path).signatures["serving_default"]
    pair, batch = _batch(1, 32, 300), _batch(64, 32, 300)

    def run(inputs):
        return lambda: [t.numpy() for t in signature(**inputs).values()]

    start = time.perf_counter()
    run(pair)()
    first = time.perf_counter() - start
    latency = _median_seconds(run(pair), repeats)
    batch_seconds = _median_seconds(run(batch), max(3, repeats // 10), warmup=1)
    return {"first_call_s": first, "latency_ms": 1000 * latency, "pairs_per_s": 64 / batch_seconds}


def benchmark_apis(base: str, repeats: int) -> dict[str, float]:
    """Median milliseconds of one pair over REST (JSON) and over gRPC, on one server."""
    models = load_models([ModelConfig("reloc", base)], BatchingParameters())
    server = start_server(models, port=0, host="127.0.0.1", grpc_port=0)
    inputs = {k: v.numpy() for k, v in _batch(1, 32, 300).items()}
    body = json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()}}).encode()
    url = f"http://127.0.0.1:{server.rest_api_port}/v1/models/reloc:predict"
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "reloc"
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def rest():
        with urllib.request.urlopen(urllib.request.Request(url, data=body)) as response:
            json.loads(response.read())

    def grpc_call():
        response = stub.Predict(request, timeout=60)
        tf.make_ndarray(response.outputs["probabilities"])

    try:
        count = max(5, repeats // 3)
        return {
            "REST": 1000 * _median_seconds(rest, count),
            "gRPC": 1000 * _median_seconds(grpc_call, count),
        }
    finally:
        channel.close()
        server.shutdown()


def benchmark_stalls(base: str, stalled: int, clients: int, requests: int) -> None:
    """Prints how `requests` from `clients` fare with and without `stalled` stalled clients."""
    models = load_models([ModelConfig("reloc", base)], BatchingParameters())
    server = start_server(models, port=0, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.rest_api_port}/v1/models/reloc:predict"
    bodies = []
    for seed in range(requests):
        pair = {k: v.numpy()[0].tolist() for k, v in _batch(1, 32, 300, seed).items()}
        bodies.append(json.dumps({"instances": [pair]}))
    concurrent_requests(url, bodies, clients)  # warm-up: the merged batches' shapes compile
    try:
        for count in (0, stalled):
            sockets = stalled_connections(
                "127.0.0.1", server.rest_api_port, count, "/v1/models/reloc:predict"
            )
            try:
                start = time.perf_counter()
                results = concurrent_requests(url, bodies, clients)
                wall = time.perf_counter() - start
            finally:
                for sock in sockets:
                    sock.close()
            answered = sum(status == 200 for status, _ in results)
            seconds = np.array([s for _, s in results])
            print(
                f"[XLA] {count} stalled connections, {requests} requests from {clients} clients: "
                f"{answered}/{requests} answered 200 in {wall:.1f} s; latency median "
                f"{1000 * np.median(seconds):.0f} ms, 95th percentile "
                f"{1000 * np.percentile(seconds, 95):.0f} ms, max {1000 * seconds.max():.0f} ms"
            )
    finally:
        server.shutdown()


def benchmark_relocalize(path: str) -> dict[int, float]:
    predictor = load_predictor(path)
    rng = np.random.default_rng(0)
    query = rng.standard_normal((32, FEATURE_DIM)).astype("float32")
    reference = rng.standard_normal((30_000, FEATURE_DIM)).astype("float32")
    for steps in (300, 3_000, 30_000):  # warm-up: XLA compiles each batch shape once
        relocalize(predictor, query, reference[:steps])
    times = {}
    for steps in (300, 3_000, 30_000):
        start = time.perf_counter()
        relocalize(predictor, query, reference[:steps])
        times[steps] = time.perf_counter() - start
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skip_plain", action="store_true", help="skip the export without XLA")
    parser.add_argument(
        "--skip_rest", action="store_true", help="skip the REST and gRPC round trips"
    )
    parser.add_argument(
        "--api_only",
        action="store_true",
        help="only the REST and gRPC round trips and the stalled clients",
    )
    parser.add_argument("--stalled", type=int, default=60, help="stalled connections")
    parser.add_argument("--clients", type=int, default=32, help="well-behaved clients")
    parser.add_argument("--requests", type=int, default=64, help="their requests")
    parser.add_argument(
        "--reference", action="store_true", help="scale the target by the unhoisted yardstick"
    )
    args = parser.parse_args()
    logging.getLogger("waitress").setLevel(logging.ERROR)  # "Task queue depth" under load
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores")
    target_ms = LATENCY_TARGET_MS
    if args.reference:
        from unhoisted_reference import UnhoistedModel

        yardstick_ms = benchmark_inference(jit=True, model=UnhoistedModel())
        target_ms = LATENCY_TARGET_MS * yardstick_ms / YARDSTICK_XLA_MS
        print(
            f"unhoisted yardstick with XLA: {yardstick_ms:.1f} ms per pair "
            f"({YARDSTICK_XLA_MS:.0f} ms on the target's machine): the "
            f"{LATENCY_TARGET_MS:.0f} ms target reads {target_ms:.1f} ms here"
        )
    model = build_model(FEATURE_DIM, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        kinds = (
            {"XLA": True} if args.skip_plain or args.api_only else {"XLA": True, "no XLA": False}
        )
        paths = {}
        for name, jit in kinds.items():
            base = os.path.join(tmp, name.replace(" ", "_"))
            paths[name] = (base, str(export_saved_model(model, base, jit_compile=jit)))
        for name, (_, path) in paths.items():
            if args.api_only:
                break
            figures = benchmark_signature(path, args.repeats)
            verdict = "meets" if figures["latency_ms"] <= target_ms else "misses"
            print(
                f"[{name}] latency {figures['latency_ms']:.1f} ms per pair (median; query 32, "
                f"reference 300; {verdict} the {target_ms:.1f} ms target), first call "
                f"{figures['first_call_s']:.1f} s"
            )
            print(f"[{name}] throughput {figures['pairs_per_s']:.1f} pairs/s at batch 64")
        base, path = paths["XLA"]
        if not args.skip_rest:
            for api, milliseconds in benchmark_apis(base, args.repeats).items():
                print(f"[XLA] {api} round trip {milliseconds:.1f} ms per pair (median)")
            benchmark_stalls(base, args.stalled, args.clients, args.requests)
        if args.api_only:
            return
        for steps, seconds in benchmark_relocalize(path).items():
            print(f"[XLA] relocalize: reference {steps:>6,} features in {seconds:.2f} s")


if __name__ == "__main__":
    main()
