"""Attention-weighted query and matching aggregation in both directions, Eqs. (2) to (7)."""

from __future__ import annotations

import keras
from keras import ops

from video_reloc.layers.cross_gate import CrossGate, gate
from video_reloc.layers.factorized_bilinear import FactorizedBilinear, factorized_bilinear
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
    own LSTM. Both directions run in one loop over a batch of 2B rows, and everything that does
    not depend on the recurrent state (W^q h^q for all query steps, W^r h^r + b^m and the query
    gate g^r for all reference steps) is computed once before the loop.

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
            to the caller (an exported model compiles the whole function with XLA).

    Returns:
        h^m, the concatenated forward and backward matching states, shape `(B, Tr, 2 * units)`;
        with `return_attention`, also the forward attention alpha, shape `(B, Tr, Tq)`. Steps
        at or past `reference_length` hold values that no valid step depends on.
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
        dense_kwargs = {
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "dtype": self.dtype_policy,
        }
        # Eq. (2): W^q (no bias), W^r with b^m, W^m (no bias), and w with b.
        self.query_projection = keras.layers.Dense(
            attention_units, use_bias=False, name="query_projection", **dense_kwargs
        )
        self.query_projection.build(query_shape)
        self.reference_projection = keras.layers.Dense(
            attention_units, name="reference_projection", **dense_kwargs
        )
        self.reference_projection.build(reference_shape)
        self.state_projection = keras.layers.Dense(
            attention_units, use_bias=False, name="state_projection", **dense_kwargs
        )
        self.state_projection.build((None, self.units))
        self.attention_score = keras.layers.Dense(1, name="attention_score", **dense_kwargs)
        self.attention_score.build((None, None, attention_units))
        # Eq. (3).
        self.cross_gate = None
        if self.cross_gating:
            self.cross_gate = CrossGate(
                kernel_initializer=self.kernel_initializer,
                bias_initializer=self.bias_initializer,
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
                kernel_initializer=self.kernel_initializer,
                bias_initializer=self.bias_initializer,
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
            initializer=self.kernel_initializer,
            name="lstm_kernel",
        )
        self.lstm_recurrent_kernel = self.add_weight(
            shape=(2, units, 4 * units),
            initializer=self.recurrent_initializer,
            name="lstm_recurrent_kernel",
        )
        bias_initializer = self.bias_initializer
        if self.unit_forget_bias:
            bias_initializer = forget_bias_initializer(units, self.bias_initializer)
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

        # Both directions in one batch of 2B rows: forward, then backward (reversed reference).
        reversed_reference = reverse_sequence(reference, reference_length)
        reference2 = ops.concatenate([reference, reversed_reference], axis=0)  # (2B, Tr, l)
        query2 = ops.concatenate([query, query], axis=0)  # (2B, Tq, l)
        query_mask2 = ops.concatenate([query_mask, query_mask], axis=0)  # (2B, Tq)

        # Hoisted out of the loop: W^q h^q_j, W^r h^r_i + b^m and g^r_i for every step.
        query_proj = self.query_projection(query2)  # (2B, Tq, a)
        step_inputs = [reference2, self.reference_projection(reference2)]
        if self.cross_gate is not None:
            step_inputs.append(self.cross_gate.query_gate(reference2))  # (2B, Tr, l)
        step_inputs = [ops.transpose(x, (1, 0, 2)) for x in step_inputs]  # time major

        # Weights read once: reads inside the loop would be stacked per step for the gradient.
        attention_units = ops.shape(query_proj)[-1]
        units = self.units
        # h_{i-1} feeds both W^m of Eq. (2) and the LSTM of Eq. (7): one matmul per direction.
        state_kernel = ops.concatenate(
            [
                ops.broadcast_to(self.state_projection.kernel, (2, units, attention_units)),
                self.lstm_recurrent_kernel,
            ],
            axis=-1,
        )  # (2, u, a + 4u)
        score_kernel = ops.squeeze(ops.convert_to_tensor(self.attention_score.kernel), -1)
        score_bias = self.attention_score.bias[0]
        lstm_kernel = ops.convert_to_tensor(self.lstm_kernel)
        lstm_bias = self.lstm_bias[:, None, :]
        if self.cross_gate is not None:
            gate_dense = self.cross_gate.query_to_reference_dense
            gate_kernel = ops.convert_to_tensor(gate_dense.kernel)
            gate_bias = ops.convert_to_tensor(gate_dense.bias)
        if self.bilinear is not None:
            bilinear_kernel = ops.convert_to_tensor(self.bilinear.projection.kernel)
            bilinear_bias = ops.convert_to_tensor(self.bilinear.projection.bias)
        mask_value = ops.cast(_MASKED_SCORE, query_proj.dtype)

        def step(carry, xs):
            h, c = carry
            reference_i, reference_proj_i = xs[0], xs[1]
            state = ops.matmul(ops.reshape(h, (2, -1, units)), state_kernel)  # (2, B, a + 4u)
            state = ops.reshape(state, (-1, attention_units + 4 * units))
            # `split`, not slicing: a strided slice's gradient writes a full-size zero tensor.
            state_attention, state_lstm = ops.split(state, [attention_units], axis=-1)
            # Eq. (2); the score as a product and a sum: a matmul with one output column has
            # a slow gradient.
            energy = ops.tanh(query_proj + ops.expand_dims(reference_proj_i + state_attention, 1))
            scores = ops.sum(energy * score_kernel, axis=-1) + score_bias  # (2B, Tq)
            alpha = ops.softmax(ops.where(query_mask2, scores, mask_value), axis=-1)
            attended = ops.einsum("bt,btl->bl", alpha, query2)
            # Eq. (3): g^r_i was computed before the loop.
            if self.cross_gate is not None:
                reference_i = reference_i * gate(attended, gate_kernel, gate_bias)
                attended = attended * xs[2]
            # Eq. (5), or the concatenation ablation.
            if self.bilinear is not None:
                matched = factorized_bilinear(
                    attended, reference_i, bilinear_kernel, bilinear_bias, self.bilinear_rank
                )
            else:
                matched = ops.concatenate([attended, reference_i], axis=-1)
            # Eq. (7): one LSTM step per direction.
            matched = ops.reshape(matched, (2, -1, ops.shape(matched)[-1]))
            z = ops.matmul(matched, lstm_kernel) + lstm_bias  # (2, B, 4u)
            z = ops.reshape(z, (-1, 4 * units)) + state_lstm
            h, c = lstm_cell(z, c)
            return (h, c), ((h, alpha) if return_attention else h)

        zeros = ops.zeros((2 * batch, units), dtype=query_proj.dtype)
        outputs = scan(
            step,
            (zeros, zeros),
            step_inputs,
            reference_steps,
            2 if return_attention else 1,
            compile_step=isinstance(training, bool) and training,
        )
        states = outputs[0] if return_attention else outputs  # (Tr, 2B, u)
        states = ops.transpose(states, (1, 0, 2))
        forward, backward = ops.split(states, 2, axis=0)
        backward = reverse_sequence(backward, reference_length)
        matched = ops.concatenate([forward, backward], axis=-1)
        if not return_attention:
            return matched
        attention = ops.transpose(outputs[1], (1, 0, 2))[:batch]  # (B, Tr, Tq)
        return matched, attention

    def compute_output_shape(self, query_shape, reference_shape=None):
        reference_shape = reference_shape or query_shape
        return (reference_shape[0], reference_shape[1], 2 * self.units)

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
