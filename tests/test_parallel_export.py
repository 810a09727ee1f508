"""The parallel model through the SavedModel export: signature, equality, a fresh process."""

from __future__ import annotations

import pytest
import tensorflow as tf
from test_export import (
    FEATURE_DIM,
    check_against_keras,
    fresh_process_outputs,
    make_inputs,
    must_compile_functions,
    random_inputs,
)

from video_reloc.export import export_saved_model
from video_reloc.parallel_model import build_parallel_model


@pytest.fixture(scope="module")
def parallel_model():
    return build_parallel_model(
        FEATURE_DIM, seed=0, units=8, bilinear_rank=2, map_channels=3, aggregation_units=8
    )


@pytest.fixture(scope="module")
def parallel_exports(parallel_model, tmp_path_factory):
    """The model exported twice: version 1 with XLA, version 2 without."""
    base = tmp_path_factory.mktemp("parallel_export") / "reloc"
    return {
        "xla": export_saved_model(parallel_model, base, jit_compile=True, warmup_shapes=[]),
        "plain": export_saved_model(parallel_model, base, jit_compile=False, warmup_shapes=[]),
    }


@pytest.mark.parametrize("kind", ["xla", "plain"])
def test_signature_equals_the_keras_model(parallel_model, parallel_exports, kind):
    signature = tf.saved_model.load(str(parallel_exports[kind])).signatures["serving_default"]
    assert sorted(signature.structured_outputs) == [
        "attention",
        "end",
        "probabilities",
        "score",
        "start",
    ]
    for inputs in (make_inputs(), random_inputs(1, 1, 3, 50), random_inputs(2, 5, 20, 77)):
        outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
        outputs = {k: v.numpy() for k, v in outputs.items()}
        assert outputs["attention"].shape == (
            len(inputs["query"]),
            inputs["reference"].shape[1],
            inputs["query"].shape[1],
        )
        check_against_keras(parallel_model, inputs, outputs, exact_argmax=kind == "plain")


def test_xla_export_compiles_the_whole_model(parallel_exports):
    names = must_compile_functions(parallel_exports["xla"])
    assert any("_decode" in name for name in names), names
    assert len(names) >= 2, names  # the model's forward pass and the decoding
    assert must_compile_functions(parallel_exports["plain"]) == []


@pytest.mark.slow
def test_fresh_process_without_the_package(parallel_model, parallel_exports, tmp_path):
    inputs = make_inputs()
    (outputs,) = fresh_process_outputs([parallel_exports["xla"]], inputs, tmp_path)
    check_against_keras(parallel_model, inputs, outputs, exact_argmax=False)
