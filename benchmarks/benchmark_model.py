"""Prints the model's training throughput and single-pair inference latency on this machine.

    python benchmarks/benchmark_model.py [--jit] [--steps 20] [--reference]

Training: forward, backward and Adam on batches of 128 pairs, query 16 and reference 72 steps,
D = 500, l = 128 (issue 2's setting). Inference: one pair, query 32 and reference 300 steps,
through the model and Eq. (12) decoding. `--reference` also measures, on the same machine and
in the same run, `unhoisted_reference.py`: the plain TF implementation without hoisting that
issue 2 states its targets against.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from video_reloc import build_model
from video_reloc.decode import decode_segments
from video_reloc.losses import localization_loss


def _batch(batch, query_steps, reference_steps, dim, rng):
    return {
        "query": rng.standard_normal((batch, query_steps, dim)).astype("float32"),
        "query_length": np.full((batch,), query_steps, "int32"),
        "reference": rng.standard_normal((batch, reference_steps, dim)).astype("float32"),
        "reference_length": np.full((batch,), reference_steps, "int32"),
    }


def benchmark_training(
    batch=128, query_steps=16, reference_steps=72, dim=500, steps=20, jit=False, model=None
):
    rng = np.random.default_rng(0)
    model = model or build_model(dim, seed=0)
    optimizer = keras.optimizers.Adam(1e-3, global_clipnorm=5.0)
    inputs = _batch(batch, query_steps, reference_steps, dim, rng)
    gt = np.stack([np.full(batch, 10), np.full(batch, 30)], 1).astype("int32")

    @tf.function(jit_compile=jit)
    def train_step(inputs, gt):
        with tf.GradientTape() as tape:
            out = model(inputs, training=True)
            loss = localization_loss(out["log_probabilities"], gt, inputs["reference_length"])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    for _ in range(3):
        train_step(inputs, gt).numpy()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        train_step(inputs, gt).numpy()
        times.append(time.perf_counter() - start)
    # The median step: a shared or virtual machine's stalls should not move the figure.
    return batch / float(np.median(times))


def benchmark_inference(
    query_steps=32, reference_steps=300, dim=500, repeats=50, jit=False, model=None
):
    rng = np.random.default_rng(0)
    model = model or build_model(dim, seed=0)
    inputs = _batch(1, query_steps, reference_steps, dim, rng)
    inputs = {k: tf.constant(v) for k, v in inputs.items()}

    @tf.function(jit_compile=jit)
    def infer(inputs):
        out = model(inputs, training=False)
        return decode_segments(out["log_probabilities"], inputs["reference_length"])

    for _ in range(5):
        [t.numpy() for t in infer(inputs)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        [t.numpy() for t in infer(inputs)]
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jit", action="store_true", help="compile with XLA")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--reference", action="store_true", help="also measure the unhoisted reference"
    )
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, XLA: {args.jit}")
    models = {"video_reloc": lambda: None}
    if args.reference:
        from unhoisted_reference import UnhoistedModel

        models["unhoisted reference"] = UnhoistedModel
    setting = "median step; batch 128, query 16, reference 72, D 500, l 128"
    for name, make in models.items():
        pairs = benchmark_training(steps=args.steps, jit=args.jit, model=make())
        print(f"{name} training: {pairs:.1f} pairs/s ({setting})")
        latency = benchmark_inference(jit=args.jit, model=make())
        print(f"{name} inference: {latency:.2f} ms per pair (median; query 32, reference 300)")


if __name__ == "__main__":
    main()
