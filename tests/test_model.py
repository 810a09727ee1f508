"""The whole model: shapes, padding invariance, gradients, saving, ablations."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import distinct_weights

from video_reloc import ABLATIONS, VideoRelocModel, build_model
from video_reloc.losses import localization_loss

DIM = 12


def _pair_batch(rng, lengths_q, lengths_r, steps_q=None, steps_r=None):
    steps_q = steps_q or max(lengths_q)
    steps_r = steps_r or max(lengths_r)
    batch = len(lengths_q)
    return {
        "query": rng.standard_normal((batch, steps_q, DIM)).astype("float32"),
        "query_length": np.array(lengths_q, "int32"),
        "reference": rng.standard_normal((batch, steps_r, DIM)).astype("float32"),
        "reference_length": np.array(lengths_r, "int32"),
    }


@pytest.fixture(scope="module")
def model():
    return build_model(DIM, units=8, bilinear_rank=2, seed=1)


def test_output_shapes(model):
    inputs = _pair_batch(np.random.default_rng(0), [3, 5], [9, 4])
    outputs = model(inputs, return_attention=True)
    assert outputs["log_probabilities"].shape == (2, 9, 4)
    assert outputs["attention"].shape == (2, 9, 5)
    np.testing.assert_allclose(np.exp(outputs["log_probabilities"]).sum(-1), 1.0, rtol=1e-5)


# compile_stages runs the encoder, each matching direction and the localizer as XLA
# computations of their own, as the exported signature does.
@pytest.mark.parametrize("compile_stages", [False, True])
def test_padding_never_leaks_into_valid_steps(model, compile_stages):
    rng = np.random.default_rng(1)
    lengths_q, lengths_r = [3, 5, 1], [9, 4, 1]
    inputs = _pair_batch(rng, lengths_q, lengths_r)
    padded = _pair_batch(rng, lengths_q, lengths_r, steps_q=8, steps_r=15)
    for key in ("query", "reference"):
        steps = inputs[key].shape[1]
        padded[key][:, :steps] = inputs[key]
        lengths = inputs[f"{key}_length"]
        for b, n in enumerate(lengths):  # junk inside the original padding too
            padded[key][b, n:] = 1e3 * rng.standard_normal(padded[key][b, n:].shape)
    a = model(inputs, return_attention=True)
    b = model(padded, return_attention=True, compile_stages=compile_stages)
    for i, (nq, nr) in enumerate(zip(lengths_q, lengths_r)):
        np.testing.assert_allclose(
            a["log_probabilities"][i, :nr], b["log_probabilities"][i, :nr], rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            a["attention"][i, :nr, :nq], b["attention"][i, :nr, :nq], rtol=1e-4, atol=1e-6
        )


def test_compiled_stages_are_separate_xla_computations(model):
    specs = {
        "query": tf.TensorSpec((None, None, DIM)),
        "query_length": tf.TensorSpec((None,), tf.int32),
        "reference": tf.TensorSpec((None, None, DIM)),
        "reference_length": tf.TensorSpec((None,), tf.int32),
    }
    graph = (
        tf.function(lambda inputs: model(inputs, compile_stages=True))
        .get_concrete_function(specs)
        .graph
    )
    compiled = [
        op.name
        for op in graph.get_operations()
        if op.type in ("PartitionedCall", "StatefulPartitionedCall")
        and op.get_attr("_XlaMustCompile")
    ]
    # The encoder for the query, the reference's projection and its loop, the matching's
    # preparation of both directions, its two directions, the localizer: calls with no path
    # between the two directions, so TensorFlow can run them at once.
    assert len(compiled) == 7, compiled
    functions = {name: graph.get_operation_by_name(name).get_attr("f").name for name in compiled}
    for stage in ("_prepare_directions", "encoder_projection", "encoder_recurrence"):
        assert sum(stage in f for f in functions.values()) == 1, (stage, functions)
    matching = [
        graph.get_operation_by_name(name)
        for name, f in functions.items()
        if "_match_direction" in f
    ]
    assert len(matching) == 2, functions

    def ancestors(op, seen):
        for tensor in op.inputs:
            if tensor.op not in seen:
                seen.add(tensor.op)
                ancestors(tensor.op, seen)
        return seen

    assert matching[0] not in ancestors(matching[1], set())
    assert matching[1] not in ancestors(matching[0], set())


def test_gradients_reach_every_trainable_weight():
    model = build_model(DIM, units=8, bilinear_rank=2, seed=2)
    inputs = _pair_batch(np.random.default_rng(2), [3, 5], [9, 6])
    with tf.GradientTape() as tape:
        out = model(inputs, training=True)
        loss = localization_loss(
            out["log_probabilities"], np.array([[1, 4], [2, 3]]), inputs["reference_length"]
        )
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(grads) == len(model.trainable_variables) == 23
    for variable, grad in zip(model.trainable_variables, grads):
        assert grad is not None, variable.path
        assert np.all(np.isfinite(grad)), variable.path
        if variable.path.endswith("matching/cell/b"):
            # The attention softmax ignores a constant added to every score (Eq. 2's b): its
            # gradient is zero but for rounding.
            assert np.abs(np.asarray(grad)).max() < 1e-6, variable.path
        else:
            assert np.any(np.asarray(grad) != 0), variable.path


def test_a_step_compiled_as_a_whole_gives_the_fused_steps_gradients():
    # A training call runs the matching's "fused" path (each step an XLA computation), which
    # cannot be nested in an XLA computation; `model.jit_compile = True` says the caller
    # compiles the whole step, and the model then runs the "hoisted" path.
    model = build_model(
        DIM, units=8, bilinear_rank=2, seed=2, encoder_dropout=0, matching_dropout=0
    )
    inputs = _pair_batch(np.random.default_rng(2), [3, 5], [9, 6])
    groundtruth = np.array([[1, 4], [2, 3]])

    def gradients(jit_compile):
        model.jit_compile = jit_compile

        @tf.function(jit_compile=jit_compile)
        def step(inputs):
            with tf.GradientTape() as tape:
                out = model(inputs, training=True)
                loss = localization_loss(
                    out["log_probabilities"], groundtruth, inputs["reference_length"]
                )
            return loss, tape.gradient(loss, model.trainable_variables)

        return step(inputs)

    assert model._paths(training=True, compile_stages=False) == ("fused", None)
    fused_loss, fused = gradients(False)
    whole_loss, whole = gradients(True)
    assert model._paths(training=True, compile_stages=False) == ("hoisted", False)
    assert model._paths(training=False, compile_stages=True) == ("staged", False)
    np.testing.assert_allclose(whole_loss, fused_loss, rtol=1e-5)
    for variable, a, b in zip(model.trainable_variables, whole, fused):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=variable.path)


def test_training_steps_reduce_the_loss():
    model = build_model(
        DIM, units=8, bilinear_rank=2, seed=3, encoder_dropout=0, matching_dropout=0
    )
    inputs = _pair_batch(np.random.default_rng(3), [3, 5, 4, 2], [9, 6, 8, 7])
    gt = np.array([[1, 4], [2, 3], [0, 8], [3, 7]], "int32")
    optimizer = keras.optimizers.Adam(3e-2, global_clipnorm=5.0)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = localization_loss(
                model(inputs, training=True)["log_probabilities"], gt, inputs["reference_length"]
            )
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    first = float(step())
    for _ in range(60):
        last = float(step())
    assert last < 0.5 * first


def test_keras_save_and_load_round_trip(model, tmp_path):
    inputs = _pair_batch(np.random.default_rng(4), [3, 5], [9, 4])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, VideoRelocModel)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(
        loaded(inputs)["log_probabilities"], model(inputs)["log_probabilities"], rtol=1e-6
    )


def test_config_round_trip(model):
    clone = VideoRelocModel.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


def test_ablations_are_switches_of_one_model():
    counts = {
        name: build_model(DIM, ablation=name, units=8, bilinear_rank=2).count_params()
        for name in ABLATIONS
    }
    u, k = 8, 2
    bilinear = u * k * (u + 1)
    gates = 2 * (u * u + u)
    concat_extra = 2 * (2 * u - u) * 4 * u  # the matching LSTMs read 2u instead of u inputs
    assert counts["full"] - counts["base_cross_gating"] == bilinear - concat_extra
    assert counts["full"] - counts["base_bilinear"] == gates
    assert counts["base_cross_gating"] - counts["base"] == gates
    with pytest.raises(ValueError, match="ablation"):
        build_model(DIM, ablation="tiny")


def test_missing_inputs_are_named(model):
    inputs = _pair_batch(np.random.default_rng(5), [3], [4])
    del inputs["query_length"]
    with pytest.raises(KeyError, match="query_length"):
        model(inputs)


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_every_kernel_has_its_own_draw(ablation):
    # A Keras initializer instance draws the same values on every call: handed to several
    # weights, W^q, W^r, W^m and the cross gates started identical (26 pairs in the four
    # variants). The same seed still gives the same model.
    model = build_model(DIM, ablation=ablation, units=8, bilinear_rank=2, seed=3)
    assert distinct_weights(model.weights) == []
    again = build_model(DIM, ablation=ablation, units=8, bilinear_rank=2, seed=3)
    for a, b in zip(model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    other = build_model(DIM, ablation=ablation, units=8, bilinear_rank=2, seed=4)
    assert not np.array_equal(np.asarray(model.weights[0]), np.asarray(other.weights[0]))
