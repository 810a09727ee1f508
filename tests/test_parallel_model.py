"""Tests of the parallel model: outputs, padding invariance, no loop over time, configs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import distinct_weights

from video_reloc import architectures, build_model, training
from video_reloc.losses import localization_loss
from video_reloc.parallel_model import (
    PARALLEL_ABLATIONS,
    ParallelRelocModel,
    build_parallel_model,
)

DIM = 12
SMALL = {"units": 8, "bilinear_rank": 2, "map_channels": 3, "aggregation_units": 8}


def make_inputs(seed=0, batch=3, query_steps=7, reference_steps=40):
    rng = np.random.default_rng(seed)
    return {
        "query": rng.standard_normal((batch, query_steps, DIM)).astype("float32"),
        "query_length": np.array([7, 4, 1], "int32")[:batch],
        "reference": rng.standard_normal((batch, reference_steps, DIM)).astype("float32"),
        "reference_length": np.array([40, 23, 2], "int32")[:batch],
    }


def with_junk(inputs, seed=5):
    """The inputs with large random values after every valid length."""
    rng = np.random.default_rng(seed)
    junk = dict(inputs)
    for key in ("query", "reference"):
        x = inputs[key].copy()
        for b, n in enumerate(inputs[f"{key}_length"]):
            x[b, n:] = 100.0 * rng.standard_normal(x[b, n:].shape)
        junk[key] = x
    return junk


@pytest.fixture(scope="module")
def model():
    return build_parallel_model(DIM, seed=0, **SMALL)


def test_outputs(model):
    inputs = make_inputs()
    outputs = model(inputs, training=False, return_attention=True)
    log_probabilities = np.asarray(outputs["log_probabilities"])
    attention = np.asarray(outputs["attention"])
    assert log_probabilities.shape == (3, 40, 4) and attention.shape == (3, 40, 7)
    np.testing.assert_allclose(np.exp(log_probabilities).sum(-1), 1.0, rtol=1e-5)
    for b, (nq, nr) in enumerate(zip(inputs["query_length"], inputs["reference_length"])):
        np.testing.assert_allclose(attention[b, :nr].sum(-1), 1.0, rtol=1e-5)
        assert not attention[b, :, nq:].any()
    assert set(model(inputs)) == {"log_probabilities"}


@pytest.mark.parametrize("ablation", sorted(PARALLEL_ABLATIONS))
def test_padding_invariance(ablation):
    """Junk after the valid lengths changes no valid output, in every ablation, with dropout."""
    model = build_parallel_model(DIM, ablation=ablation, seed=1, **SMALL)
    inputs = make_inputs(1)
    clean = model(inputs, return_attention=True)
    junk = model(with_junk(inputs), return_attention=True)
    for b, (nq, nr) in enumerate(zip(inputs["query_length"], inputs["reference_length"])):
        np.testing.assert_allclose(
            np.asarray(junk["log_probabilities"])[b, :nr],
            np.asarray(clean["log_probabilities"])[b, :nr],
            rtol=1e-4,
            atol=1e-5,
        )
        np.testing.assert_allclose(
            np.asarray(junk["attention"])[b, :nr, :nq],
            np.asarray(clean["attention"])[b, :nr, :nq],
            rtol=1e-4,
            atol=1e-6,
        )


def test_a_row_alone_equals_the_row_in_a_padded_batch(model):
    inputs = make_inputs(2)
    batch = np.asarray(model(inputs)["log_probabilities"])
    for b, (nq, nr) in enumerate(zip(inputs["query_length"], inputs["reference_length"])):
        alone = {
            "query": inputs["query"][b : b + 1, :nq],
            "query_length": np.array([nq], "int32"),
            "reference": inputs["reference"][b : b + 1, :nr],
            "reference_length": np.array([nr], "int32"),
        }
        np.testing.assert_allclose(
            np.asarray(model(alone)["log_probabilities"])[0], batch[b, :nr], rtol=1e-4, atol=1e-5
        )


def test_compiled_equals_plain(model):
    inputs = {k: tf.constant(v) for k, v in make_inputs(3).items()}
    plain = model(inputs, return_attention=True)
    compiled = model(inputs, return_attention=True, compile_stages=True)
    for key in ("log_probabilities", "attention"):
        np.testing.assert_allclose(compiled[key], plain[key], rtol=1e-4, atol=1e-5)


def _op_types(concrete_function) -> set[str]:
    """Every op type of a concrete function's graph and of the functions it calls."""
    graph_def = concrete_function.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def _training_step_ops(model) -> set[str]:
    inputs = make_inputs()
    groundtruth = np.array([[3, 9], [1, 5], [0, 1]], "int32")

    @tf.function
    def step(inputs, groundtruth):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = localization_loss(
                outputs["log_probabilities"], groundtruth, inputs["reference_length"]
            )
        return tape.gradient(loss, model.trainable_variables)

    return _op_types(step.get_concrete_function(inputs, groundtruth))


def test_no_loop_over_time_in_training_or_inference(model):
    loops = {"While", "StatelessWhile", "Scan", "For"}
    assert not _training_step_ops(model) & loops
    inference = tf.function(lambda x: model(x, return_attention=True, compile_stages=True))
    assert not _op_types(inference.get_concrete_function(make_inputs())) & loops
    # The check can fail: the paper's model loops over time.
    assert _training_step_ops(build_model(DIM, units=4, bilinear_rank=2)) & loops


def test_checkpoint_round_trip_keeps_every_weight(tmp_path):
    a = build_parallel_model(DIM, seed=1, **SMALL)
    b = build_parallel_model(DIM, seed=2, **SMALL)
    path = tf.train.Checkpoint(model=a).write(str(tmp_path / "ckpt"))
    saved = [name for name, _ in tf.train.list_variables(path) if name.startswith("model/")]
    assert len(saved) == len(a.weights)
    tf.train.Checkpoint(model=b).read(path).assert_existing_objects_matched()
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=x.path)


@pytest.mark.parametrize("ablation", sorted(PARALLEL_ABLATIONS))
def test_ablations_distinct_and_seeded_weights(ablation):
    model = build_parallel_model(DIM, ablation=ablation, seed=3, **SMALL)
    assert distinct_weights(model.weights) == []
    again = build_parallel_model(DIM, ablation=ablation, seed=3, **SMALL)
    for x, y in zip(model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=x.path)
    switches = {**model.get_config(), **PARALLEL_ABLATIONS[ablation]}
    names = {v.path.split("/")[1] for v in model.weights}
    assert ("cross_gate" in names) == (switches["cross_gating"] and switches["matching"] != "none")
    assert ("bilinear" in names) == (switches["matching"] == "bilinear")
    assert ("similarity_map" in names) == switches["similarity_map"]
    kernels = [v.path.split("/")[-1] for v in model.projection.weights]
    assert kernels == [f"{view}_kernel" for view in switches["input_views"]] + ["bias"]


def test_config_and_serialization_round_trip(model):
    config = model.get_config()
    clone = ParallelRelocModel.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert type(revived) is ParallelRelocModel and revived.get_config() == config


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="ablation"):
        build_parallel_model(DIM, ablation="tiny")
    with pytest.raises(ValueError, match="matching"):
        ParallelRelocModel(matching="outer")
    with pytest.raises(ValueError, match="views"):
        build_parallel_model(DIM, input_views=["whitened"], **SMALL)
    with pytest.raises(ValueError, match="normalization"):
        build_parallel_model(DIM, normalization="standardize", **SMALL)
    with pytest.raises(ValueError, match="normalization"):
        training.preset_config("parallel", model_dir="m", normalization="center")
    with pytest.raises(ValueError, match="similarity map"):
        ParallelRelocModel(matching="none", similarity_map=False)
    with pytest.raises(KeyError, match="reference_length"):
        build_parallel_model(DIM, **SMALL)({"query": np.zeros((1, 2, DIM), "float32")})


def test_architectures_dispatch():
    config = {"feature_dim": DIM, "architecture": "parallel", "ablation": "base", "units": 8}
    model = architectures.build_from_config(config, seed=0)
    assert isinstance(model, ParallelRelocModel) and not model.similarity_map
    assert architectures.model_feature_dim(model) == DIM
    cgbm = architectures.build_from_config({"feature_dim": DIM, "units": 4, "bilinear_rank": 2})
    assert architectures.model_feature_dim(cgbm) == DIM
    with pytest.raises(ValueError, match="architecture"):
        architectures.build_from_config({"feature_dim": DIM, "architecture": "transformer"})
