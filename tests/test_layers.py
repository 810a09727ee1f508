"""Tests of the Keras layers: shapes, configs, golden values and numpy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from layer_testing import distinct_weights, run_layer_test

from video_reloc.baselines.frame_level import standardize
from video_reloc.layers import (
    AttentionMatching,
    CrossGate,
    FactorizedBilinear,
    FeatureNormalization,
    LocalizerHead,
    MatchingCell,
    SequenceLSTM,
)
from video_reloc.layers.attention_matching import IMPLEMENTATIONS
from video_reloc.layers.sequence_lstm import gpu_available
from video_reloc.layers.sequence_ops import cudnn_params


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _config_round_trip(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    return clone


class TestCrossGate:
    def test_golden_values(self):
        layer = CrossGate(kernel_initializer=keras.initializers.Constant(0.1))
        query = np.ones((2, 3), "float32")
        reference = np.full((2, 3), 2.0, "float32")
        gated_query, gated_reference = layer((query, reference))
        # g^r = sigmoid(0.1 * (2 + 2 + 2)), g^q = sigmoid(0.1 * (1 + 1 + 1)).
        np.testing.assert_allclose(gated_query, np.full((2, 3), _sigmoid(0.6)), rtol=1e-6)
        np.testing.assert_allclose(gated_reference, np.full((2, 3), 2 * _sigmoid(0.3)), rtol=1e-6)

    def test_precomputed_gate_matches_and_shapes(self):
        layer = CrossGate()
        query = np.random.default_rng(0).standard_normal((4, 7, 5)).astype("float32")
        reference = np.random.default_rng(1).standard_normal((4, 7, 6)).astype("float32")
        a = layer((query, reference))
        b = layer((query, reference), query_gate=layer.query_gate(reference))
        assert a[0].shape == (4, 7, 5) and a[1].shape == (4, 7, 6)
        np.testing.assert_allclose(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1])
        assert len(layer.trainable_weights) == 4

    def test_config(self):
        layer = CrossGate(bias_initializer="ones", name="gate")
        clone = _config_round_trip(layer)
        assert clone.name == "gate"


class TestFactorizedBilinear:
    def test_golden_values(self):
        layer = FactorizedBilinear(
            units=2, rank=3, kernel_initializer=keras.initializers.Constant(0.5)
        )
        t = layer((np.array([[1.0, 2.0]], "float32"), np.array([[3.0, 4.0]], "float32")))
        # Every F_j x = 0.5 * 3 = 1.5 and F_j y = 0.5 * 7 = 3.5, summed over k = 3.
        np.testing.assert_allclose(t, [[15.75, 15.75]], rtol=1e-6)

    def test_matches_eq5_and_eq6(self):
        rng = np.random.default_rng(0)
        layer = FactorizedBilinear(units=4, rank=3, bias_initializer="random_normal")
        x = rng.standard_normal((5, 6)).astype("float32")
        y = rng.standard_normal((5, 6)).astype("float32")
        t = np.asarray(layer((x, y)))
        kernel = np.asarray(layer.F).reshape(6, 4, 3)
        bias = np.asarray(layer.b_f).reshape(4, 3)
        for j in range(4):
            f_j, b_j = kernel[:, j, :].T, bias[j]  # F_j is (k, l)
            eq5 = np.sum((x @ f_j.T + b_j) * (y @ f_j.T + b_j), axis=-1)
            eq6 = np.einsum("nl,lm,nm->n", x, f_j.T @ f_j, y) + (x + y) @ f_j.T @ b_j + b_j @ b_j
            np.testing.assert_allclose(t[:, j], eq5, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(t[:, j], eq6, rtol=1e-4, atol=1e-4)

    def test_parameter_count_is_k_l_l_plus_1(self):
        layer = FactorizedBilinear(rank=8)
        layer.build(((None, 128), (None, 128)))
        assert layer.count_params() == 8 * 128 * (128 + 1)

    def test_shapes_with_none_dims_and_config(self):
        layer = FactorizedBilinear(units=7, rank=2)
        x = keras.Input((None, 5))
        assert layer((x, x)).shape == (None, None, 7)
        _config_round_trip(layer)

    def test_rejects_mismatched_inputs(self):
        with pytest.raises(ValueError, match="last dimensions"):
            FactorizedBilinear()((np.zeros((1, 3)), np.zeros((1, 4))))


class TestSequenceLSTM:
    def _layer_and_keras_lstm(self, x):
        layer = SequenceLSTM(6)
        reference = keras.layers.LSTM(6, return_sequences=True, use_cudnn=False)
        layer.build(x.shape)
        reference.build(x.shape)
        reference.set_weights(
            [np.asarray(layer.kernel), np.asarray(layer.recurrent_kernel), np.asarray(layer.bias)]
        )
        return layer, reference

    def test_equals_keras_lstm(self):
        # The hoisted loop against Keras' own LSTM with the same weights; where a GPU is
        # present, `keras.layers.LSTM` and `SequenceLSTM` both take cuDNN's path instead.
        rng = np.random.default_rng(0)
        x = rng.standard_normal((3, 9, 5)).astype("float32")
        layer, reference = self._layer_and_keras_lstm(x)
        assert layer.takes_cudnn_path() == gpu_available()
        np.testing.assert_allclose(layer(x, use_cudnn=False), reference(x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(layer.bias)[6:12], 1.0)  # unit forget bias

    def test_cudnn_params_are_keras_weights_in_cudnn_layout(self):
        # cuDNN's canonical LSTM layout (TensorFlow's CudnnRNNParamsToCanonical): per gate
        # (input, forget, cell, output) a (u, d) input weight, then per gate a (u, u)
        # recurrent weight, row-major; then 4 input biases and 4 recurrent biases. Unpacked
        # this way, the parameters run as an LSTM equal the hoisted loop.
        rng = np.random.default_rng(1)
        x = rng.standard_normal((2, 7, 5)).astype("float32")
        layer = SequenceLSTM(3, bias_initializer="random_normal")
        expected = np.asarray(layer(x, use_cudnn=False))
        params = np.asarray(cudnn_params(layer.kernel, layer.recurrent_kernel, layer.bias))
        u, d = 3, 5
        assert params.shape == (4 * u * (d + u) + 8 * u,)
        sizes = [u * d] * 4 + [u * u] * 4 + [u] * 8
        parts = np.split(params, np.cumsum(sizes)[:-1])
        w = [p.reshape(u, d) for p in parts[:4]]
        r = [p.reshape(u, u) for p in parts[4:8]]
        bias_w, bias_r = parts[8:12], parts[12:16]
        np.testing.assert_array_equal(np.concatenate(bias_w), 0.0)
        h, c = np.zeros((2, u)), np.zeros((2, u))
        for t in range(7):
            i, f, g, o = (x[:, t] @ w[k].T + h @ r[k].T + bias_w[k] + bias_r[k] for k in range(4))
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            np.testing.assert_allclose(expected[:, t], h, rtol=1e-5, atol=1e-6)

    @pytest.mark.skipif(not gpu_available(), reason="cuDNN's path needs a GPU")
    def test_cudnn_path_equals_hoisted_loop(self):
        x = np.random.default_rng(2).standard_normal((3, 9, 5)).astype("float32")
        layer, reference = self._layer_and_keras_lstm(x)
        np.testing.assert_allclose(
            layer(x, use_cudnn=True), layer(x, use_cudnn=False), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(layer(x), reference(x), rtol=1e-4, atol=1e-5)

    def test_use_cudnn_switch(self):
        layer = SequenceLSTM(4)
        assert layer.use_cudnn == "auto"
        assert not layer.takes_cudnn_path(False)
        if not gpu_available():
            assert layer.supports_jit
            assert not layer.takes_cudnn_path()
            with pytest.raises(ValueError, match="use_cudnn=True"):
                layer.takes_cudnn_path(True)
        with pytest.raises(ValueError, match="use_cudnn"):
            SequenceLSTM(4, use_cudnn="always")

    def test_config_and_none_dims(self):
        layer = SequenceLSTM(4, use_cudnn=False)
        assert layer(keras.Input((None, 3))).shape == (None, None, 4)
        assert _config_round_trip(layer).use_cudnn is False


class TestLocalizerHead:
    @pytest.mark.parametrize("output_type", ["log_probabilities", "probabilities", "logits"])
    def test_outputs(self, output_type):
        x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype("float32")
        layer = LocalizerHead(units=6, output_type=output_type)
        y = np.asarray(layer(x))
        assert y.shape == (2, 5, 4)
        logits = np.asarray(layer.classifier(layer.lstm(x)))
        expected = {
            "logits": logits,
            "probabilities": np.exp(logits) / np.exp(logits).sum(-1, keepdims=True),
            "log_probabilities": logits - np.log(np.exp(logits).sum(-1, keepdims=True)),
        }[output_type]
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)

    def test_parts_are_concatenated(self):
        x = np.random.default_rng(1).standard_normal((2, 5, 8)).astype("float32")
        layer = LocalizerHead(units=6)
        whole = np.asarray(layer(x))
        parts = np.asarray(layer([x[..., :3], x[..., 3:]]))
        np.testing.assert_allclose(parts, whole, rtol=1e-6, atol=1e-6)
        assert layer.compute_output_shape([(2, 5, 3), (2, 5, 5)]) == (2, 5, 4)

    def test_config(self):
        clone = _config_round_trip(LocalizerHead(units=3, output_type="probabilities"))
        assert clone.output_type == "probabilities"
        with pytest.raises(ValueError, match="output_type"):
            LocalizerHead(output_type="scores")


def _numpy_matching(layer, query, reference, query_length, reference_length):
    """A direct, unoptimised transcription of Eqs. (2), (3), (5) and (7), one pair at a time."""
    w = {v.path.split("/", 1)[1]: np.asarray(v) for v in layer.weights}
    units = layer.units

    def direction(d, hq, hr):
        h = np.zeros(units)
        c = np.zeros(units)
        out, att = [], []
        for r in hr:
            e = np.tanh(hq @ w["cell/W_q"] + r @ w["cell/W_r"] + w["cell/b_m"] + h @ w["cell/W_m"])
            s = e @ w["cell/w"][:, 0] + w["cell/b"]
            a = np.exp(s - s.max())
            a /= a.sum()
            q_bar = a @ hq
            g_r = _sigmoid(r @ w["cell/cross_gate/W_g_r"] + w["cell/cross_gate/b_g_r"])
            g_q = _sigmoid(q_bar @ w["cell/cross_gate/W_g_q"] + w["cell/cross_gate/b_g_q"])
            q_t, r_t = q_bar * g_r, r * g_q
            f = w["cell/bilinear/F"].reshape(len(q_t), len(q_t), -1)
            b = w["cell/bilinear/b_f"].reshape(len(q_t), -1)
            t = np.sum(
                (np.einsum("l,ljk->jk", q_t, f) + b) * (np.einsum("l,ljk->jk", r_t, f) + b), -1
            )
            z = (
                t @ w["cell/lstm_kernel"][d]
                + h @ w["cell/lstm_recurrent_kernel"][d]
                + w["cell/lstm_bias"][d]
            )
            i, fg, g, o = np.split(z, 4)
            c = _sigmoid(fg) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            out.append(h)
            att.append(a)
        return np.array(out), np.array(att)

    results = []
    for b in range(len(query)):
        hq = query[b, : query_length[b]]
        hr = reference[b, : reference_length[b]]
        forward, attention = direction(0, hq, hr)
        backward, _ = direction(1, hq, hr[::-1])
        results.append((np.concatenate([forward, backward[::-1]], -1), attention))
    return results


# The call of the matching with None dimensions, as the exported signature traces it.
UNKNOWN_SHAPES = [
    tf.TensorSpec((None, None, 6)),
    tf.TensorSpec((None, None, 6)),
    tf.TensorSpec((None,), tf.int32),
    tf.TensorSpec((None,), tf.int32),
]

# (cross_gating, matching) of the four models of Table 2.
TABLE2_VARIANTS = [(False, "concat"), (True, "concat"), (False, "bilinear"), (True, "bilinear")]


class TestAttentionMatching:
    def _variant(self, cross_gating, matching):
        """A small layer of one Table 2 variant: random biases, an attention size of its own."""
        return AttentionMatching(
            units=4,
            attention_units=5,
            cross_gating=cross_gating,
            matching=matching,
            bilinear_rank=3,
            bias_initializer="random_normal",
        )

    def _inputs(self, seed=0):
        rng = np.random.default_rng(seed)
        query = rng.standard_normal((3, 5, 6)).astype("float32")
        reference = rng.standard_normal((3, 8, 6)).astype("float32")
        return query, reference, np.array([5, 2, 1], "int32"), np.array([8, 3, 1], "int32")

    # "loop" calls the cell at every step; "hoisted" computes the state-independent terms
    # before one loop over both directions; "fused" compiles each step with XLA; "staged"
    # runs each direction as an XLA computation of its own.
    @pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
    def test_equals_numpy_transcription_of_the_equations(self, implementation):
        query, reference, query_length, reference_length = self._inputs()
        layer = AttentionMatching(units=4, bilinear_rank=3, bias_initializer="random_normal")
        (forward, backward), attention = layer(
            query,
            reference,
            query_length,
            reference_length,
            return_attention=True,
            implementation=implementation,
        )
        matched = np.concatenate([forward, backward], -1)
        assert matched.shape == (3, 8, 8) and attention.shape == (3, 8, 5)
        expected = _numpy_matching(layer, query, reference, query_length, reference_length)
        for b, (states, alpha) in enumerate(expected):
            n, m = reference_length[b], query_length[b]
            np.testing.assert_allclose(matched[b, :n], states, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(attention[b, :n, :m], alpha, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(np.asarray(attention[b, :n, m:]), 0.0, atol=1e-7)

    @pytest.mark.parametrize(
        "cross_gating,matching,return_attention",
        # Every variant with the attention's gradient too; the full model also without it.
        [(*variant, True) for variant in TABLE2_VARIANTS] + [(True, "bilinear", False)],
    )
    def test_every_path_gives_the_loops_gradients(self, cross_gating, matching, return_attention):
        # Every implementation made for training against the plain loop, in a function with
        # None dimensions, as a training step traces it; "hoisted" also inside a function
        # compiled with XLA as a whole (a train step with jit_compile, as Keras' fit may make).
        # "staged" is for inference: its loops' gradient accumulators cannot leave their XLA
        # computations.
        query, reference, query_length, reference_length = self._inputs(seed=3)
        layer = self._variant(cross_gating, matching)
        layer(query, reference, query_length, reference_length)
        rng = np.random.default_rng(7)
        state_weights = tf.constant(rng.standard_normal((3, 8, 8)), tf.float32)
        attention_weights = tf.constant(rng.standard_normal((3, 8, 5)), tf.float32)

        def gradients(implementation, jit_compile=False):
            @tf.function(
                input_signature=[tf.TensorSpec((None, None, 6)), tf.TensorSpec((None, None, 6))],
                jit_compile=jit_compile,
            )
            def run(query, reference):
                with tf.GradientTape() as tape:
                    tape.watch([query, reference])
                    out = layer(
                        query,
                        reference,
                        query_length,
                        reference_length,
                        return_attention=return_attention,
                        implementation=implementation,
                    )
                    if return_attention:
                        out, attention = out
                    out = tf.concat(out, -1)
                    loss = tf.reduce_sum(out * state_weights)
                    if return_attention:
                        loss += tf.reduce_sum(attention * attention_weights)
                sources = [query, reference] + layer.trainable_variables
                return out, tape.gradient(loss, sources)

            return run(tf.constant(query), tf.constant(reference))

        expected_out, expected = gradients("loop")
        runs = {name: gradients(name) for name in ("hoisted", "fused")}
        if cross_gating == (matching == "bilinear"):  # the full model and the base one
            runs["hoisted, compiled as a whole"] = gradients("hoisted", jit_compile=True)
        for implementation, (out, actual) in runs.items():
            np.testing.assert_allclose(
                out, expected_out, rtol=1e-5, atol=1e-6, err_msg=implementation
            )
            assert len(actual) == len(expected) == 2 + len(layer.trainable_variables)
            names = ["query", "reference"] + [v.path for v in layer.trainable_variables]
            for name, a, e in zip(names, actual, expected):
                assert a is not None, (implementation, name)
                np.testing.assert_allclose(
                    a, e, rtol=1e-4, atol=1e-5, err_msg=f"{implementation}: {name}"
                )
                if name.endswith("cell/b"):
                    # The softmax ignores a constant added to every score: this gradient is
                    # zero but for rounding, which may or may not leave a few 1e-9.
                    assert np.abs(np.asarray(e)).max() < 1e-6, name
                else:
                    assert np.abs(np.asarray(e)).max() > 0, name

    @pytest.mark.parametrize("cross_gating,matching", TABLE2_VARIANTS)
    def test_every_path_equals_the_loop_with_unknown_shapes(self, cross_gating, matching):
        # In a graph with None dimensions, as the exported signature traces it.
        query, reference, query_length, reference_length = self._inputs(seed=5)
        layer = self._variant(cross_gating, matching)

        @tf.function(input_signature=UNKNOWN_SHAPES)
        def every_path(query, reference, query_length, reference_length):
            return {
                implementation: layer(
                    query,
                    reference,
                    query_length,
                    reference_length,
                    return_attention=True,
                    implementation=implementation,
                )
                for implementation in IMPLEMENTATIONS
            }

        results = every_path(query, reference, query_length, reference_length)
        expected, expected_attention = results.pop("loop")
        for implementation, (matched, attention) in results.items():
            assert len(matched) == 2 and matched[0].shape == matched[1].shape == (3, 8, 4)
            assert attention.shape == (3, 8, 5)
            for b, n in enumerate(reference_length):
                for direction in range(2):
                    np.testing.assert_allclose(
                        matched[direction][b, :n],
                        expected[direction][b, :n],
                        rtol=1e-5,
                        atol=1e-6,
                        err_msg=implementation,
                    )
                np.testing.assert_allclose(
                    attention[b, :n],
                    expected_attention[b, :n],
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=implementation,
                )

    def test_hoisted_loops_read_no_weight_at_each_step(self):
        # The hoisted paths read the weights once, before the loop (inside it, reads would be
        # stacked per step for the gradient); the plain loop reads them at every step.
        query, reference, query_length, reference_length = self._inputs()
        layer = self._variant(True, "bilinear")
        layer(query, reference, query_length, reference_length)

        def reads_in_loops(implementation):
            signature = [tf.TensorSpec((None, None, 6)), tf.TensorSpec((None, None, 6))]
            graph = (
                tf.function(
                    lambda q, r: layer(
                        q, r, query_length, reference_length, implementation=implementation
                    )
                )
                .get_concrete_function(*signature)
                .graph
            )
            bodies = {
                op.get_attr("body").name
                for op in graph.get_operations()
                if op.type in ("While", "StatelessWhile")
            }
            functions = graph.as_graph_def().library.function
            assert len(bodies) == (2 if implementation == "loop" else 1), implementation
            return sum(
                node.op == "ReadVariableOp"
                for function in functions
                if function.signature.name in bodies
                for node in function.node_def
            )

        assert reads_in_loops("hoisted") == 0
        assert reads_in_loops("loop") > 0

    @pytest.mark.parametrize(
        "cross_gating,matching", [(False, "concat"), (True, "concat"), (False, "bilinear")]
    )
    def test_ablations_have_the_right_weights(self, cross_gating, matching):
        query, reference, query_length, reference_length = self._inputs()
        layer = AttentionMatching(units=4, cross_gating=cross_gating, matching=matching)
        forward, backward = layer(query, reference, query_length, reference_length)
        assert forward.shape == backward.shape == (3, 8, 4)
        names = {v.path.split("/", 1)[1] for v in layer.weights}
        assert any("cross_gate" in n for n in names) == cross_gating
        assert any("bilinear" in n for n in names) == (matching == "bilinear")
        in_dim = 6 if matching == "bilinear" else 12
        assert tuple(layer.cell.lstm_kernel.shape) == (2, in_dim, 16)

    def test_weights_have_the_papers_names(self):
        layer = AttentionMatching(units=4, attention_units=5)
        layer.build((None, None, 6), (None, None, 6))
        shapes = {v.path.split("/", 1)[1]: tuple(v.shape) for v in layer.weights}
        assert shapes == {
            # Eq. (2)
            "cell/W_q": (6, 5),
            "cell/W_r": (6, 5),
            "cell/W_m": (4, 5),
            "cell/b_m": (5,),
            "cell/w": (5, 1),
            "cell/b": (),
            # Eq. (3)
            "cell/cross_gate/W_g_r": (6, 6),
            "cell/cross_gate/b_g_r": (6,),
            "cell/cross_gate/W_g_q": (6, 6),
            "cell/cross_gate/b_g_q": (6,),
            # Eq. (5), k = 8
            "cell/bilinear/F": (6, 48),
            "cell/bilinear/b_f": (48,),
            # Eq. (7), forward and backward
            "cell/lstm_kernel": (2, 6, 16),
            "cell/lstm_recurrent_kernel": (2, 4, 16),
            "cell/lstm_bias": (2, 16),
        }

    def test_config_and_none_dims(self):
        layer = AttentionMatching(
            units=4, matching="concat", cross_gating=False, implementation="fused"
        )
        clone = _config_round_trip(layer)
        assert clone.cell.matching == "concat" and clone.implementation == "fused"
        fn = tf.function(
            lambda q, r, ql, rl: layer(q, r, ql, rl),
            input_signature=UNKNOWN_SHAPES,
        )
        query, reference, query_length, reference_length = self._inputs()
        forward, backward = fn(query, reference, query_length, reference_length)
        assert forward.shape == backward.shape == (3, 8, 4)
        with pytest.raises(ValueError, match="matching"):
            AttentionMatching(matching="outer")
        with pytest.raises(ValueError, match="implementation"):
            AttentionMatching(implementation="cudnn")
        with pytest.raises(ValueError, match="implementation"):
            layer(query, reference, implementation="unrolled")


class TestMatchingCell:
    def _cell(self, cross_gating=True, matching="bilinear"):
        cell = MatchingCell(
            units=4,
            attention_units=5,
            cross_gating=cross_gating,
            matching=matching,
            bilinear_rank=3,
            bias_initializer="random_normal",
        )
        cell.build((None, 6), query_shape=(None, None, 6))
        return cell

    @pytest.mark.parametrize("direction", [0, 1])
    def test_one_step_reads_as_the_paper(self, direction):
        # One step of the cell against Eqs. (2), (3), (5) and (7) written out in numpy.
        rng = np.random.default_rng(2)
        query = rng.standard_normal((2, 5, 6)).astype("float32")
        reference_step = rng.standard_normal((2, 6)).astype("float32")
        h, c = (rng.standard_normal((2, 4)).astype("float32") for _ in "hc")
        mask = np.array([[True] * 5, [True, True, False, False, False]])
        cell = self._cell()
        (new_h, new_c), alpha = cell(reference_step, (h, c), query, mask, direction=direction)
        w = {v.path.split("/", 1)[1]: np.asarray(v) for v in cell.weights}
        for b in range(2):
            m = mask[b].sum()
            e = np.tanh(
                query[b, :m] @ w["W_q"] + reference_step[b] @ w["W_r"] + h[b] @ w["W_m"] + w["b_m"]
            )
            s = e @ w["w"][:, 0] + w["b"]
            a = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
            q_bar = a @ query[b, :m]
            q_t = q_bar * _sigmoid(
                reference_step[b] @ w["cross_gate/W_g_r"] + w["cross_gate/b_g_r"]
            )
            r_t = reference_step[b] * _sigmoid(
                q_bar @ w["cross_gate/W_g_q"] + w["cross_gate/b_g_q"]
            )
            f = w["bilinear/F"].reshape(6, 6, 3)  # (l, j, k)
            b_f = w["bilinear/b_f"].reshape(6, 3)
            t = np.sum((q_t @ f.transpose(1, 0, 2) + b_f) * (r_t @ f.transpose(1, 0, 2) + b_f), -1)
            z = (
                t @ w["lstm_kernel"][direction]
                + h[b] @ w["lstm_recurrent_kernel"][direction]
                + w["lstm_bias"][direction]
            )
            i, fg, g, o = np.split(z, 4)
            c_expected = _sigmoid(fg) * c[b] + _sigmoid(i) * np.tanh(g)
            h_expected = _sigmoid(o) * np.tanh(c_expected)
            np.testing.assert_allclose(alpha[b, :m], a, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(np.asarray(alpha[b, m:]), 0.0, atol=1e-7)
            np.testing.assert_allclose(new_c[b], c_expected, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(new_h[b], h_expected, rtol=1e-5, atol=1e-6)

    def test_methods_without_gating_or_bilinear(self):
        cell = self._cell(cross_gating=False, matching="concat")
        x, y = _random((2, 6)), _random((2, 6), seed=1)
        gated = cell.cross_gate(x, y)
        np.testing.assert_array_equal(gated[0], x)
        np.testing.assert_array_equal(gated[1], y)
        np.testing.assert_array_equal(cell.match(x, y), np.concatenate([x, y], -1))
        assert cell.gate is None and cell.bilinear is None

    def test_config(self):
        clone = _config_round_trip(MatchingCell(units=3, matching="concat", bilinear_rank=2))
        assert clone.matching == "concat" and clone.bilinear_rank == 2
        with pytest.raises(ValueError, match="matching"):
            MatchingCell(matching="outer")


def _random(shape, seed=0, dtype="float32"):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class TestRunLayerTest:
    """The shared checks of `layer_testing.run_layer_test`, for every layer of the package."""

    def test_cross_gate(self):
        run_layer_test(
            CrossGate,
            {},
            args=[(_random((3, 4, 5)), _random((3, 4, 6), seed=1))],
            expected_output_shape=((3, 4, 5), (3, 4, 6)),
            expected_num_trainable_weights=4,
        )

    def test_factorized_bilinear(self):
        run_layer_test(
            FactorizedBilinear,
            {"units": 7, "rank": 3},
            args=[(_random((3, 4, 5)), _random((3, 4, 5), seed=1))],
            expected_output_shape=(3, 4, 7),
            expected_num_trainable_weights=2,
        )

    def test_sequence_lstm(self):
        run_layer_test(
            SequenceLSTM,
            {"units": 6},
            args=[_random((3, 7, 5))],
            expected_output_shape=(3, 7, 6),
            expected_num_trainable_weights=3,
        )

    def test_localizer_head(self):
        run_layer_test(
            LocalizerHead,
            {"units": 6},
            args=[_random((3, 7, 8))],
            expected_output_shape=(3, 7, 4),
            expected_num_trainable_weights=5,
        )

    @pytest.mark.parametrize(
        "cross_gating,matching,implementation",
        [(*variant, "hoisted") for variant in TABLE2_VARIANTS]
        + [(True, "bilinear", name) for name in IMPLEMENTATIONS if name != "hoisted"],
    )
    def test_attention_matching(self, cross_gating, matching, implementation):
        weights = 9 + 4 * cross_gating + 2 * (matching == "bilinear")
        run_layer_test(
            AttentionMatching,
            {
                "units": 4,
                "cross_gating": cross_gating,
                "matching": matching,
                "bilinear_rank": 3,
                "implementation": implementation,
            },
            args=[_random((3, 5, 6)), _random((3, 8, 6), seed=1)],
            tensor_kwargs={
                "query_length": np.array([5, 2, 1], "int32"),
                "reference_length": np.array([8, 3, 1], "int32"),
            },
            call_kwargs={"return_attention": True},
            expected_output_shape=((3, 8, 4), (3, 8, 4), (3, 8, 5)),
            expected_num_trainable_weights=weights,
            run_training_check=implementation != "staged",  # for inference
        )

    @pytest.mark.parametrize("cross_gating,matching", TABLE2_VARIANTS)
    def test_matching_cell(self, cross_gating, matching):
        weights = 9 + 4 * cross_gating + 2 * (matching == "bilinear")
        run_layer_test(
            MatchingCell,
            {"units": 4, "cross_gating": cross_gating, "matching": matching, "bilinear_rank": 3},
            args=[_random((3, 6)), (_random((3, 4), seed=1), _random((3, 4), seed=2))],
            tensor_kwargs={
                "query": _random((3, 5, 6), seed=3),
                "query_mask": np.array(
                    [[True] * 5, [True] * 2 + [False] * 3, [True] + [False] * 4]
                ),
            },
            call_kwargs={"direction": 1},
            expected_output_shape=((3, 4), (3, 4), (3, 5)),
            expected_num_trainable_weights=weights,
        )

    def test_catches_a_shared_initializer(self):
        # A layer that hands one initializer instance to two weights: the check must fail.
        class Shared(keras.layers.Layer):
            def build(self, input_shape):
                init = keras.initializers.GlorotUniform()
                self.a = self.add_weight(shape=(input_shape[-1], 3), initializer=init)
                self.b = self.add_weight(shape=(input_shape[-1], 3), initializer=init)

            def call(self, x):
                return ops.matmul(x, self.a) + ops.matmul(x, self.b)

        layer = Shared()
        layer(_random((2, 4)))
        assert len(distinct_weights(layer.weights)) == 1


class TestFeatureNormalization:
    def test_layer(self):
        for mode in ("standardize", "center"):
            run_layer_test(
                FeatureNormalization,
                {"mode": mode},
                args=[_random((3, 7, 5))],
                tensor_kwargs={"lengths": np.array([7, 3, 1], "int32")},
                expected_output_shape=(3, 7, 5),
                expected_num_trainable_weights=0,
                run_training_check=False,
            )

    def test_standardize_equals_the_baselines_and_ignores_padding(self):
        x = _random((2, 9, 4)) * 5.0 + 3.0
        lengths = np.array([9, 5], "int32")
        junk = x.copy()
        junk[1, 5:] = 1e6
        layer = FeatureNormalization("standardize", epsilon=0.0)
        out = np.asarray(layer(junk, lengths))
        for b, n in enumerate(lengths):
            np.testing.assert_allclose(out[b, :n], standardize(x[b, :n]), rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(out[b, n:], 0.0)
        center = np.asarray(FeatureNormalization("center", epsilon=0.0)(x, lengths))
        valid = center[1, :5]
        np.testing.assert_allclose(valid.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(np.mean(valid**2), 1.0, rtol=1e-4)
        with pytest.raises(ValueError, match="mode"):
            FeatureNormalization("whiten")
