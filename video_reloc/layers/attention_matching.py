"""Attention-weighted query and matching aggregation in both directions, Eqs. (2) to (7)."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from video_reloc.layers.cross_gate import CrossGate, gate
from video_reloc.layers.factorized_bilinear import FactorizedBilinear, factorized_bilinear
from video_reloc.layers.initializers import clone_initializer
from video_reloc.layers.sequence_lstm import forget_bias_initializer
from video_reloc.layers.sequence_ops import lstm_cell, reverse_sequence, scan, sequence_mask

MATCHING_MODES = ("bilinear", "concat")
_MASKED_SCORE = -1e9


@keras.saving.register_keras_serializable(package="video_reloc")
class AttentionMatching(keras.layers.Layer):
    """Cross gated bilinear matching of Sec. 3.2 of Feng et al. (ECCV 2018), in both directions.

    At every reference step i, and for each direction, the layer computes

    - the attention-weighted query, Eq. (2), whose score uses the reference step h^r_i and the
      previous matching state h^f_{i-1}; the softmax runs over the valid query steps only;
    - cross gating, Eq. (3) (`CrossGate`; switched off by `cross_gating=False`);
    - factorized bilinear matching, Eq. (5) (`FactorizedBilinear`), or, with
      `matching="concat"`, the plain concatenation of the two vectors (the ablation of Table 2);
    - the matching LSTM, Eq. (7), whose state h^f_i feeds the next step's attention.

    The backward direction runs the same step on the reference reversed within its valid length
    (so padding never comes before valid steps) and reverses the result back. As in the original
    release, both directions share the attention, gating and bilinear weights, and each has its
    own LSTM. Everything that does not depend on the recurrent state (W^q h^q for all query
    steps, W^r h^r + b^m and the query gate g^r for all reference steps) is computed once
    before the loop. By default both directions run in one loop over a batch of 2B rows; with
    `parallel_directions`, each direction is a loop, and an XLA computation, of its own, after
    one XLA computation that prepares the inputs of both.

    Args:
        units: Hidden size of each matching LSTM (l = 128 in the paper).
        attention_units: Size of the attention space of Eq. (2); `None` means `units`.
        cross_gating: Whether to apply Eq. (3).
        matching: `"bilinear"` for Eq. (5) or `"concat"` for the ablation.
        bilinear_rank: k of Eq. (5) (8 in the paper).
        bilinear_units: Output size of the bilinear matching; `None` keeps the input size.
        kernel_initializer: Initializer of the input kernels.
        recurrent_initializer: Initializer of the LSTM recurrent kernels.
        bias_initializer: Initializer of the biases.
        unit_forget_bias: Whether the LSTM forget-gate bias starts at one.
        **kwargs: Base layer arguments.

    Call arguments:
        query: Encoded query h^q, shape `(B, Tq, lq)`.
        reference: Encoded reference h^r, shape `(B, Tr, lr)`; `lr` must equal `lq`.
        query_length: Valid query steps, shape `(B,)` int; `None` means all `Tq`.
        reference_length: Valid reference steps, shape `(B,)` int; `None` means all `Tr`.
        return_attention: Whether to also return the forward attention weights.
        training: In training (`True`), each step of the loop runs as one XLA computation,
            forward and backward (`scan(..., compile_step=True)`): about 1.15 times the
            training pairs/s on a 2-core CPU, and the same values. Otherwise the loop is left
            to the caller.
        parallel_directions: Run each direction as an XLA computation of its own (the
            matmuls of one pair are then matrix-vector products, XLA:CPU's fast path). Called
            from a graph that is not itself compiled with XLA, TensorFlow runs the two at once,
            one per core: about 1.4 times faster for one pair on a 2-core CPU. Inside a
            function compiled as a whole they run one after the other, slower than one loop.
        split_directions: Return the forward and the backward states apart, for a consumer
            that concatenates them inside its own XLA computation (`LocalizerHead` takes
            the pair), instead of a TensorFlow op between the stages.

    Returns:
        h^m, the concatenated forward and backward matching states, shape `(B, Tr, 2 * units)`,
        or with `split_directions` the pair of them, each `(B, Tr, units)`; with
        `return_attention`, also the forward attention alpha, shape `(B, Tr, Tq)`. Steps at or
        past `reference_length` hold values that no valid step depends on.
    """

    def __init__(
        self,
        units: int = 128,
        attention_units: int | None = None,
        cross_gating: bool = True,
        matching: str = "bilinear",
        bilinear_rank: int = 8,
        bilinear_units: int | None = None,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        recurrent_initializer: str | keras.initializers.Initializer = "orthogonal",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        unit_forget_bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if matching not in MATCHING_MODES:
            raise ValueError(f"`matching` must be one of {MATCHING_MODES}, got {matching!r}.")
        self.units = units
        self.attention_units = attention_units
        self.cross_gating = cross_gating
        self.matching = matching
        self.bilinear_rank = bilinear_rank
        self.bilinear_units = bilinear_units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.unit_forget_bias = unit_forget_bias

    def build(self, query_shape, reference_shape=None):
        if reference_shape is None:
            reference_shape = query_shape
        dim = query_shape[-1]
        if reference_shape[-1] != dim:
            raise ValueError(
                f"query and reference encodings must have the same size; got {dim} and "
                f"{reference_shape[-1]}."
            )
        attention_units = self.attention_units or self.units

        def dense(units, name, use_bias=True):
            return keras.layers.Dense(
                units,
                use_bias=use_bias,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name=name,
            )

        # Eq. (2): W^q (no bias), W^r with b^m, W^m (no bias), and w with b.
        self.query_projection = dense(attention_units, "query_projection", use_bias=False)
        self.query_projection.build(query_shape)
        self.reference_projection = dense(attention_units, "reference_projection")
        self.reference_projection.build(reference_shape)
        self.state_projection = dense(attention_units, "state_projection", use_bias=False)
        self.state_projection.build((None, self.units))
        self.attention_score = dense(1, "attention_score")
        self.attention_score.build((None, None, attention_units))
        # Eq. (3).
        self.cross_gate = None
        if self.cross_gating:
            self.cross_gate = CrossGate(
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name="cross_gate",
            )
            self.cross_gate.build(((None, dim), (None, dim)))
        # Eq. (5), or concatenation.
        self.bilinear = None
        if self.matching == "bilinear":
            self.bilinear = FactorizedBilinear(
                units=self.bilinear_units,
                rank=self.bilinear_rank,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name="bilinear",
            )
            self.bilinear.build(((None, dim), (None, dim)))
            matching_dim = self.bilinear_units or dim
        else:
            matching_dim = 2 * dim
        # Eq. (7): one LSTM per direction, weights stacked on a leading axis of 2.
        units = self.units
        self.lstm_kernel = self.add_weight(
            shape=(2, matching_dim, 4 * units),
            initializer=clone_initializer(self.kernel_initializer),
            name="lstm_kernel",
        )
        self.lstm_recurrent_kernel = self.add_weight(
            shape=(2, units, 4 * units),
            initializer=clone_initializer(self.recurrent_initializer),
            name="lstm_recurrent_kernel",
        )
        bias_initializer = clone_initializer(self.bias_initializer)
        if self.unit_forget_bias:
            bias_initializer = forget_bias_initializer(units, bias_initializer)
        self.lstm_bias = self.add_weight(
            shape=(2, 4 * units), initializer=bias_initializer, name="lstm_bias"
        )
        self.built = True

    def call(
        self,
        query,
        reference,
        query_length=None,
        reference_length=None,
        return_attention: bool = False,
        training=None,
        parallel_directions: bool = False,
        split_directions: bool = False,
    ):
        batch = ops.shape(reference)[0]
        query_steps = ops.shape(query)[1]
        reference_steps = ops.shape(reference)[1]
        if reference_length is None:
            reference_length = ops.full((batch,), reference_steps, dtype="int32")
        if query_length is None:
            query_mask = ops.ones((batch, query_steps), dtype="bool")
        else:
            query_mask = sequence_mask(query_length, query_steps)
        weights = self._loop_weights()
        options = {
            "units": self.units,
            "rank": self.bilinear_rank if self.bilinear is not None else None,
            "cross_gating": self.cross_gate is not None,
            "return_attention": return_attention,
        }
        if parallel_directions:
            # One XLA computation prepares both directions' step inputs; then one XLA
            # computation per direction, each with its own LSTM's weights, holds its loop
            # only: a graph that is not itself compiled runs the two loops at once, one per
            # core, and each starts at once instead of waiting for a thread of the pool that
            # the other's loop occupies.
            query_proj, step_inputs = _prepare_directions_compiled(
                query, reference, reference_length, weights, options["cross_gating"]
            )
            (forward, attention), (backward, _) = (
                _match_direction_compiled(
                    query,
                    query_mask,
                    query_proj,
                    step_inputs[d],
                    reference_length,
                    {key: w[d] if key in _PER_DIRECTION else w for key, w in weights.items()},
                    backward=bool(d),
                    **options,
                )
                for d in range(2)
            )
        else:
            # Both directions in one loop over 2B rows, forward then backward.
            query_proj, step_inputs = _prepare_both(
                query, reference, reference_length, weights, options["cross_gating"]
            )
            out = _match(
                query,
                query_mask,
                query_proj,
                step_inputs,
                weights,
                compile_step=isinstance(training, bool) and training,
                **options,
            )
            states = out[0] if return_attention else out  # (Tr, 2B, u)
            forward, backward = ops.split(ops.transpose(states, (1, 0, 2)), 2, axis=0)
            backward = reverse_sequence(backward, reference_length)
            attention = ops.transpose(out[1][:, :batch], (1, 0, 2)) if return_attention else None
        if split_directions:
            matched = (forward, backward)
        else:
            matched = ops.concatenate([forward, backward], axis=-1)
        return (matched, attention) if return_attention else matched

    def _loop_weights(self) -> dict:
        """The weights of `_match` as tensors, read once outside the loop.

        Reads inside the loop would be stacked per step for the gradient. Weights named in
        `_PER_DIRECTION` have a leading axis of 2 (forward, backward).
        """
        units = self.units
        attention_units = self.query_projection.kernel.shape[-1]
        weights = {
            "query_kernel": self.query_projection.kernel,
            "reference_kernel": self.reference_projection.kernel,
            "reference_bias": self.reference_projection.bias,
            # h_{i-1} feeds both W^m of Eq. (2) and the LSTM of Eq. (7): one matmul.
            "state_kernel": ops.concatenate(
                [
                    ops.broadcast_to(self.state_projection.kernel, (2, units, attention_units)),
                    self.lstm_recurrent_kernel,
                ],
                axis=-1,
            ),  # (2, u, a + 4u)
            "score_kernel": ops.squeeze(ops.convert_to_tensor(self.attention_score.kernel), -1),
            "score_bias": self.attention_score.bias[0],
            "lstm_kernel": self.lstm_kernel,
            "lstm_bias": self.lstm_bias,
        }
        if self.cross_gate is not None:
            for name, dense in (
                ("query_gate", self.cross_gate.reference_to_query_dense),
                ("reference_gate", self.cross_gate.query_to_reference_dense),
            ):
                weights[f"{name}_kernel"], weights[f"{name}_bias"] = dense.kernel, dense.bias
        if self.bilinear is not None:
            weights["bilinear_kernel"] = self.bilinear.projection.kernel
            weights["bilinear_bias"] = self.bilinear.projection.bias
        return {key: tf.convert_to_tensor(w) for key, w in weights.items()}

    def compute_output_spec(
        self,
        query,
        reference,
        query_length=None,
        reference_length=None,
        return_attention: bool = False,
        split_directions: bool = False,
        **kwargs,
    ):
        batch, steps = reference.shape[0], reference.shape[1]
        dtype = self.compute_dtype
        if split_directions:
            matched = tuple(keras.KerasTensor((batch, steps, self.units), dtype) for _ in "fb")
        else:
            matched = keras.KerasTensor((batch, steps, 2 * self.units), dtype)
        if return_attention:
            return matched, keras.KerasTensor((batch, steps, query.shape[1]), dtype)
        return matched

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "attention_units": self.attention_units,
                "cross_gating": self.cross_gating,
                "matching": self.matching,
                "bilinear_rank": self.bilinear_rank,
                "bilinear_units": self.bilinear_units,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "unit_forget_bias": self.unit_forget_bias,
            }
        )
        return config


# Weights of `AttentionMatching._loop_weights` with a leading axis of 2, one per direction.
_PER_DIRECTION = ("state_kernel", "lstm_kernel", "lstm_bias")


def _direction_matmul(x, kernel, bias=None):
    """Each direction's rows times its own kernel, plus its own bias.

    Args:
        x: `(n * B, d)`, the rows of n directions one after the other.
        kernel: `(n, d, m)`, or `(d, m)` for one direction.
        bias: `(n, m)`, or `(m,)` for one direction; `None` for none.

    Returns:
        `(n * B, m)`.
    """
    if len(kernel.shape) == 2:
        # A plain matmul: XLA:CPU takes a slow path for a batch matmul of one row per batch.
        y = ops.matmul(x, kernel)
        return y if bias is None else y + bias
    directions, dim = kernel.shape[0], kernel.shape[-1]
    y = ops.matmul(ops.reshape(x, (directions, -1, ops.shape(x)[-1])), kernel)  # (n, B, m)
    if bias is not None:
        y = y + bias[:, None, :]
    return ops.reshape(y, (-1, dim))


def _prepare(query, reference, weights, cross_gating):
    """What the matching loop of Eqs. (2) to (7) reads that does not depend on its state.

    Args:
        query: h^q, `(B, Tq, l)`.
        reference: h^r, `(n * B, Tr, l)`, each direction's rows in its own step order.
        weights: `AttentionMatching._loop_weights()`.
        cross_gating: Whether to apply Eq. (3).

    Returns:
        `(query_proj, step_inputs)`: W^q h^q `(B, Tq, a)`, and the time-major inputs of each
        step `(Tr, n * B, .)`: h^r, W^r h^r + b^m and, with cross gating, g^r of Eq. (3).
    """
    w = weights
    query_proj = ops.matmul(query, w["query_kernel"])  # (B, Tq, a)
    # Time major once, before the projections: one transpose (and one in the gradient), not one
    # per step input.
    reference = ops.transpose(reference, (1, 0, 2))  # (Tr, nB, l)
    step_inputs = [reference, ops.matmul(reference, w["reference_kernel"]) + w["reference_bias"]]
    if cross_gating:
        step_inputs.append(gate(reference, w["query_gate_kernel"], w["query_gate_bias"]))
    return query_proj, step_inputs


def _prepare_directions(query, reference, reference_length, weights, cross_gating):
    """`_prepare` for both directions, each direction's step inputs apart.

    The projections act on each step alone, so they are computed for the forward rows only;
    the backward direction's step inputs are their reversal within the lengths (half the
    matmuls: staged inference about 1% faster).

    Args:
        query: h^q, `(B, Tq, l)`.
        reference: h^r, `(B, Tr, l)`; the backward direction reads it reversed within the
            lengths.
        reference_length: `(B,)` int.
        weights: `AttentionMatching._loop_weights()`.
        cross_gating: Whether to apply Eq. (3).

    Returns:
        `(query_proj, (forward, backward))`, each direction's step inputs `(Tr, B, .)`.
    """
    query_proj, forward = _prepare(query, reference, weights, cross_gating)
    backward = [reverse_sequence(x, reference_length, time_major=True) for x in forward]
    return query_proj, (forward, backward)


def _prepare_both(query, reference, reference_length, weights, cross_gating):
    """`_prepare_directions` for one loop over 2B rows: the forward ones, then the backward ones.

    Returns:
        `_prepare`'s `(query_proj, step_inputs)`, the step inputs `(Tr, 2B, .)`.
    """
    query_proj, (forward, backward) = _prepare_directions(
        query, reference, reference_length, weights, cross_gating
    )
    return query_proj, [ops.concatenate([f, b], 1) for f, b in zip(forward, backward)]


_prepare_directions_compiled = tf.function(_prepare_directions, jit_compile=True, autograph=False)


def _match(
    query,
    query_mask,
    query_proj,
    step_inputs,
    weights,
    units,
    rank,
    cross_gating,
    return_attention,
    compile_step=False,
):
    """The matching loop of Eqs. (2) to (7) over the rows of n directions.

    Everything that does not depend on the recurrent state comes from `_prepare`.

    Args:
        query: h^q, `(B, Tq, l)`, shared by the n directions: the loop's gradient then
            accumulates one copy of it (and of W^q h^q) per step, not n.
        query_mask: `(B, Tq)` bool, True on valid query steps.
        query_proj: W^q h^q, `(B, Tq, a)`, from `_prepare`.
        step_inputs: The time-major step inputs `(Tr, n * B, .)` from `_prepare`.
        weights: `AttentionMatching._loop_weights()`; those of `_PER_DIRECTION` with a leading
            axis of n, or without it for one direction.
        units: u, the LSTM size.
        rank: k of Eq. (5), or `None` for the concatenation ablation.
        cross_gating: Whether to apply Eq. (3).
        return_attention: Whether to also return alpha.
        compile_step: `scan`'s option: each step as one XLA computation.

    Returns:
        The matching states h^m, time major `(Tr, n * B, u)`; with `return_attention`, also
        alpha `(Tr, n * B, Tq)`.
    """
    w = weights
    joint = len(w["state_kernel"].shape) == 3  # several directions' rows in one batch
    directions = w["state_kernel"].shape[0] if joint else 1
    attention_units = ops.shape(query_proj)[-1]
    mask_value = ops.cast(_MASKED_SCORE, query_proj.dtype)

    def step(carry, xs):
        h, c = carry
        reference_i, reference_proj_i = xs[0], xs[1]
        state = _direction_matmul(h, w["state_kernel"])  # (nB, a + 4u)
        # `split`, not slicing: a strided slice's gradient writes a full-size zero tensor.
        state_attention, state_lstm = ops.split(state, [attention_units], axis=-1)
        # Eq. (2). The score w . energy is a contraction, not a product and a sum: compiled
        # with XLA, the sum's gradient for w reduces over all n B Tq rows in a slow loop
        # (fwd+bwd of the attention 2.1 ms a step, 0.85 ms as a contraction).
        state_attention = ops.reshape(
            reference_proj_i + state_attention, (directions, -1, 1, attention_units)
        )
        energy = ops.tanh(query_proj + state_attention)  # (n, B, Tq, a)
        scores = ops.einsum("nbta,a->nbt", energy, w["score_kernel"]) + w["score_bias"]
        alpha = ops.softmax(ops.where(query_mask, scores, mask_value), axis=-1)
        attended = ops.reshape(ops.einsum("nbt,btl->nbl", alpha, query), (-1, query.shape[-1]))
        alpha = ops.reshape(alpha, (-1, ops.shape(alpha)[-1]))  # (nB, Tq)
        # Eq. (3): g^r_i was computed before the loop.
        if cross_gating:
            reference_i = reference_i * gate(
                attended, w["reference_gate_kernel"], w["reference_gate_bias"]
            )
            attended = attended * xs[2]
        # Eq. (5), or the concatenation ablation.
        if rank is not None:
            matched = factorized_bilinear(
                attended, reference_i, w["bilinear_kernel"], w["bilinear_bias"], rank
            )
        else:
            matched = ops.concatenate([attended, reference_i], axis=-1)
        # Eq. (7).
        z = _direction_matmul(matched, w["lstm_kernel"], w["lstm_bias"]) + state_lstm
        h, c = lstm_cell(z, c)
        return (h, c), ((h, alpha) if return_attention else h)

    zeros = ops.zeros((ops.shape(step_inputs[0])[1], units), dtype=query_proj.dtype)
    return scan(
        step,
        (zeros, zeros),
        step_inputs,
        ops.shape(step_inputs[0])[0],
        2 if return_attention else 1,
        compile_step=compile_step,
    )


def _match_direction(
    query,
    query_mask,
    query_proj,
    step_inputs,
    reference_length,
    weights,
    backward,
    return_attention,
    **options,
):
    """`_match` for one direction, batch major; the backward one's states reversed back.

    Args:
        query: h^q, `(B, Tq, l)`.
        query_mask: `(B, Tq)` bool.
        query_proj: W^q h^q, `(B, Tq, a)`.
        step_inputs: This direction's time-major step inputs `(Tr, B, .)` from `_prepare`,
            the backward one's reversed within the lengths.
        reference_length: `(B,)` int.
        weights: `_match`'s, those of `_PER_DIRECTION` for this direction only.
        backward: Whether this is the backward direction.
        return_attention: Whether to return alpha or `None`.
        **options: `_match`'s `units`, `rank` and `cross_gating`.

    Returns:
        `(h^m, alpha)`: the direction's states `(B, Tr, u)` at the reference's steps, and
        alpha `(B, Tr, Tq)` or `None`.
    """
    out = _match(
        query,
        query_mask,
        query_proj,
        step_inputs,
        weights,
        return_attention=return_attention,
        **options,
    )
    states = ops.transpose(out[0] if return_attention else out, (1, 0, 2))
    if backward:
        states = reverse_sequence(states, reference_length)
    return states, (ops.transpose(out[1], (1, 0, 2)) if return_attention else None)


_match_direction_compiled = tf.function(_match_direction, jit_compile=True, autograph=False)
