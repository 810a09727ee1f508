"""Tests of the parallel model's layers: shared layer checks, numpy references, padding."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import run_layer_test

from video_reloc.layers import (
    DilatedTemporalConv,
    NormalizedProjection,
    SimilarityAttention,
    SimilarityMapEncoder,
)


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _with_junk(x, lengths, seed=7):
    """`x` `(B, T, ...)` with large random values after each row's valid length."""
    x = np.array(x, copy=True)
    junk = 100.0 * _random(x.shape, seed)
    for b, n in enumerate(lengths):
        x[b, n:] = junk[b, n:]
    return x


QUERY_LENGTH = np.array([5, 2, 1], "int32")
REFERENCE_LENGTH = np.array([9, 4, 1], "int32")


class TestSharedLayerChecks:
    """`layer_testing.run_layer_test` on every layer of the parallel model."""

    @pytest.mark.parametrize("units,weights", [(None, 8), (6, 10)])
    def test_dilated_temporal_conv(self, units, weights):
        run_layer_test(
            DilatedTemporalConv,
            {"units": units, "dilations": (1, 2), "dropout": 0.1},
            args=[_random((3, 9, 5))],
            tensor_kwargs={"lengths": REFERENCE_LENGTH},
            expected_output_shape=(3, 9, units or 5),
            expected_num_trainable_weights=weights,
        )

    @pytest.mark.parametrize("views,weights", [(("standardized", "scaled"), 3), (("scaled",), 2)])
    def test_normalized_projection(self, views, weights):
        run_layer_test(
            NormalizedProjection,
            {"units": 7, "views": views},
            args=[_random((3, 9, 5))],
            tensor_kwargs={"lengths": REFERENCE_LENGTH},
            expected_output_shape=(3, 9, 7),
            expected_num_trainable_weights=weights,
            # The fit step's loss is the output's mean, and a standardized view's mean over
            # the steps is zero whatever its kernel: TestNormalizedProjection checks its
            # gradient instead.
            run_training_check="standardized" not in views,
        )

    @pytest.mark.parametrize("units,weights", [(None, 1), (4, 2)])
    def test_similarity_attention(self, units, weights):
        run_layer_test(
            SimilarityAttention,
            {"units": units, "initial_scale": 5.0},
            args=[_random((3, 5, 6)), _random((3, 9, 6), seed=1)],
            tensor_kwargs={"query_length": QUERY_LENGTH, "reference_length": REFERENCE_LENGTH},
            expected_output_shape=((3, 9, 6), (3, 9, 5), (3, 9, 5)),
            expected_num_trainable_weights=weights,
        )

    @pytest.mark.parametrize("convolutions,features", [(0, 5), (2, 13)])
    def test_similarity_map_encoder(self, convolutions, features):
        similarity = np.tanh(_random((3, 9, 5)))
        attention = np.exp(_random((3, 9, 5), seed=1))
        attention /= attention.sum(-1, keepdims=True)
        run_layer_test(
            SimilarityMapEncoder,
            {"channels": 4, "convolutions": convolutions},
            args=[similarity, attention],
            tensor_kwargs={"query_length": QUERY_LENGTH, "reference_length": REFERENCE_LENGTH},
            expected_output_shape=(3, 9, features),
            expected_num_trainable_weights=2 * convolutions,
            run_training_check=convolutions > 0,
        )


def _standardize(rows):
    """The normalized frame-level baseline's standardization of one sequence, in numpy."""
    rows = rows.astype(np.float64)
    return (rows - rows.mean(0)) / np.sqrt(rows.var(0) + 1e-3)


class TestNormalizedProjection:
    def test_equals_the_two_views_projected_side_by_side(self):
        layer = NormalizedProjection(7)
        x = 3.0 * _random((3, 9, 5)) + 5.0 * _random((3, 1, 5), seed=2)  # an offset per row
        out = np.asarray(layer(x, lengths=REFERENCE_LENGTH))
        standardized, scaled = (np.asarray(k) for k in layer.kernels)
        assert standardized.shape == (5, 4) and scaled.shape == (5, 3)  # 7 = 4 + 3
        bias = np.asarray(layer.bias)
        for b, n in enumerate(REFERENCE_LENGTH):
            rows = x[b, :n].astype(np.float64)
            scaled_rows = rows / np.sqrt(np.mean(rows**2) + 1e-3)
            expected = np.concatenate(
                [_standardize(rows) @ standardized, scaled_rows @ scaled], axis=-1
            )
            np.testing.assert_allclose(out[b, :n], expected + bias, rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(out[b, n:], 0.0)

    def test_every_kernel_gets_a_gradient(self):
        layer = NormalizedProjection(6)
        x = tf.constant(_random((3, 9, 5)))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x, lengths=REFERENCE_LENGTH)))
        for variable, gradient in zip(
            layer.trainable_variables, tape.gradient(loss, layer.trainable_variables)
        ):
            assert np.abs(np.asarray(gradient)).sum() > 0, variable.path

    def test_one_step_standardizes_to_zero(self):
        layer = NormalizedProjection(4, views=["standardized"], bias_initializer="ones")
        out = np.asarray(layer(100.0 * _random((1, 1, 6)), lengths=np.array([1], "int32")))
        np.testing.assert_allclose(out, 1.0, atol=1e-5)

    def test_scaled_view_ignores_the_scale_of_the_features(self):
        layer = NormalizedProjection(4, views=["scaled"])
        x = _random((2, 6, 3))
        np.testing.assert_allclose(layer(1000.0 * x), layer(10.0 * x), rtol=1e-4, atol=1e-5)

    def test_padding_invariance(self):
        layer = NormalizedProjection(6)
        x = _random((3, 9, 5))
        a = np.asarray(layer(x, lengths=REFERENCE_LENGTH))
        b = np.asarray(layer(_with_junk(x, REFERENCE_LENGTH), lengths=REFERENCE_LENGTH))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

    def test_rejects_unknown_or_repeated_views(self):
        for views in ([], ["whitened"], ["scaled", "scaled"]):
            with pytest.raises(ValueError, match="views"):
                NormalizedProjection(4, views=views)


class TestDilatedTemporalConv:
    def test_padding_invariance_and_unpadded_equality(self):
        layer = DilatedTemporalConv(6, dilations=(1, 2, 4))
        x = _random((3, 12, 5))
        lengths = np.array([12, 7, 2], "int32")
        padded = np.asarray(layer(x, lengths=lengths))
        junk = np.asarray(layer(_with_junk(x, lengths), lengths=lengths))
        for b, n in enumerate(lengths):
            np.testing.assert_allclose(junk[b, :n], padded[b, :n], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(junk[b, n:], 0.0)
            alone = np.asarray(layer(x[b : b + 1, :n], lengths=np.array([n], "int32")))[0]
            np.testing.assert_allclose(alone, padded[b, :n], rtol=1e-5, atol=1e-5)

    def test_receptive_field_is_the_sum_of_the_dilations_on_each_side(self):
        keras.utils.set_random_seed(0)  # the edges' change must not fall in a dead ReLU
        layer = DilatedTemporalConv(16, dilations=(1, 2, 4))  # 7 steps on each side
        x = _random((1, 31, 3))
        changed = x.copy()
        changed[0, 15] += 10.0
        delta = np.abs(np.asarray(layer(changed)) - np.asarray(layer(x))).sum(-1)[0]
        assert set(np.flatnonzero(delta > 1e-6)) <= set(range(8, 23))
        assert delta[8] > 0 and delta[22] > 0

    def test_rejects_an_even_kernel(self):
        with pytest.raises(ValueError, match="kernel_size"):
            DilatedTemporalConv(4, kernel_size=2)


class TestSimilarityAttention:
    def test_equals_numpy_and_masks(self):
        layer = SimilarityAttention(initial_scale=3.0)
        query, reference = _random((3, 5, 6)), _random((3, 9, 6), seed=1)
        attended, similarity, attention = (
            np.asarray(t) for t in layer(query, reference, QUERY_LENGTH, REFERENCE_LENGTH)
        )
        for b in range(3):
            nq, nr = QUERY_LENGTH[b], REFERENCE_LENGTH[b]
            q = query[b, :nq] / np.linalg.norm(query[b, :nq], axis=-1, keepdims=True)
            r = reference[b, :nr] / np.linalg.norm(reference[b, :nr], axis=-1, keepdims=True)
            s = r @ q.T
            a = np.exp(3.0 * s)
            a /= a.sum(-1, keepdims=True)
            np.testing.assert_allclose(similarity[b, :nr, :nq], s, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(attention[b, :nr, :nq], a, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(attended[b, :nr], a @ query[b, :nq], rtol=1e-4, atol=1e-4)
            assert not attention[b, :, nq:].any() and not attention[b, nr:].any()
            assert not similarity[b, :, nq:].any() and not similarity[b, nr:].any()

    def test_padding_invariance(self):
        layer = SimilarityAttention(units=4)
        query, reference = _random((3, 5, 6)), _random((3, 9, 6), seed=1)
        clean = layer(query, reference, QUERY_LENGTH, REFERENCE_LENGTH)
        junk = layer(
            _with_junk(query, QUERY_LENGTH),
            _with_junk(reference, REFERENCE_LENGTH, seed=8),
            QUERY_LENGTH,
            REFERENCE_LENGTH,
        )
        for a, b in zip(clean, junk):
            for n, nr in enumerate(REFERENCE_LENGTH):
                np.testing.assert_allclose(
                    np.asarray(a)[n, :nr], np.asarray(b)[n, :nr], rtol=1e-5, atol=1e-5
                )


class TestSimilarityMapEncoder:
    def _inputs(self):
        similarity = np.tanh(_random((3, 9, 5)))
        attention = np.exp(_random((3, 9, 5), seed=1))
        for b, (nq, nr) in enumerate(zip(QUERY_LENGTH, REFERENCE_LENGTH)):
            similarity[b, :, nq:] = similarity[b, nr:] = 0.0
            attention[b, :, nq:] = attention[b, nr:] = 0.0
        attention /= np.maximum(attention.sum(-1, keepdims=True), 1e-12)
        return similarity, attention

    def test_statistics_equal_numpy(self):
        similarity, attention = self._inputs()
        out = np.asarray(
            SimilarityMapEncoder(convolutions=0)(
                similarity, attention, QUERY_LENGTH, REFERENCE_LENGTH
            )
        )
        for b, (nq, nr) in enumerate(zip(QUERY_LENGTH, REFERENCE_LENGTH)):
            s, a = similarity[b, :nr, :nq], attention[b, :nr, :nq]
            position = (np.arange(nq) + 0.5) / nq - 0.5
            expected = np.stack(
                [
                    s.max(1),
                    s.mean(1),
                    (a * s).sum(1),
                    (a * position).sum(1),
                    (s - s.max(0, keepdims=True)).max(1),
                ],
                axis=-1,
            )
            np.testing.assert_allclose(out[b, :nr], expected, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(out[b, nr:], 0.0)

    def test_padding_invariance(self):
        layer = SimilarityMapEncoder(channels=3, convolutions=2)
        similarity, attention = self._inputs()
        clean = np.asarray(layer(similarity, attention, QUERY_LENGTH, REFERENCE_LENGTH))
        junk_similarity, junk_attention = similarity.copy(), attention.copy()
        noise = 50.0 * _random(similarity.shape, seed=3)
        for b, (nq, nr) in enumerate(zip(QUERY_LENGTH, REFERENCE_LENGTH)):
            for array in (junk_similarity, junk_attention):
                array[b, :, nq:] = noise[b, :, nq:]
                array[b, nr:] = noise[b, nr:]
        junk = np.asarray(layer(junk_similarity, junk_attention, QUERY_LENGTH, REFERENCE_LENGTH))
        for b, nr in enumerate(REFERENCE_LENGTH):
            np.testing.assert_allclose(junk[b, :nr], clean[b, :nr], rtol=1e-5, atol=1e-5)
