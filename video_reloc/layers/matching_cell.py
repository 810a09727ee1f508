"""One reference step of the cross gated bilinear matching, Eqs. (2), (3), (5) and (7)."""

from __future__ import annotations

import keras
from keras import ops

from video_reloc.layers.cross_gate import CrossGate
from video_reloc.layers.factorized_bilinear import FactorizedBilinear
from video_reloc.layers.initializers import clone_initializer
from video_reloc.layers.sequence_lstm import forget_bias_initializer
from video_reloc.layers.sequence_ops import lstm_cell

MATCHING_MODES = ("bilinear", "concat")
MASKED_SCORE = -1e9  # the score of a query step past the query's length: exp() gives 0
DIRECTIONS = ("forward", "backward")


@keras.saving.register_keras_serializable(package="video_reloc")
class MatchingCell(keras.layers.Layer):
    """One reference step i of the matching of Sec. 3.2 of Feng et al. (ECCV 2018).

    As `keras.layers.LSTMCell` holds the equations that `keras.layers.LSTM` loops over,
    `AttentionMatching` loops over this cell.

    `call` is one reference step, and each of its parts is a method named after the paper:

    - `attend`, Eq. (2): e_ij = tanh(W^q h^q_j + W^r h^r_i + W^m h_{i-1} + b^m),
      alpha_ij = softmax_j(w^T e_ij + b) over the valid query steps, and
      h-bar^q_i = sum_j alpha_ij h^q_j;
    - `cross_gate`, Eq. (3) (`CrossGate`): h~^q_i and h~^r_i;
    - `match`, Eq. (5) (`FactorizedBilinear`): t_i; or, with `matching="concat"`, the
      concatenation [h~^q_i; h~^r_i] (the ablation of Table 2);
    - `aggregate`, Eq. (7): h_i = LSTM(t_i, h_{i-1}).

    The weights are those of the paper: `W_q`, `W_r` `(l, a)`, `W_m` `(u, a)`, `b_m` `(a,)`,
    `w` `(a, 1)` and `b` `()` of Eq. (2); `cross_gate/W_g_r`, `b_g_r`, `W_g_q`, `b_g_q` of Eq. (3);
    `bilinear/F`, `b_f` of Eq. (5); and the two LSTMs of Eq. (7), `lstm_kernel` `(2, m, 4u)`,
    `lstm_recurrent_kernel` `(2, u, 4u)` and `lstm_bias` `(2, 4u)`, whose index 0 is the forward
    LSTM (h^f) and 1 the backward one (h^b), gate order (input, forget, cell, output). As in the
    original release, both directions share the weights of Eqs. (2), (3) and (5).

    Args:
        units: u, the size of each matching LSTM (l = 128 in the paper).
        attention_units: a, the size of e_ij; `None` means `units`.
        cross_gating: Whether to apply Eq. (3).
        matching: `"bilinear"` for Eq. (5) or `"concat"` for the ablation.
        bilinear_rank: k of Eq. (5) (8 in the paper).
        bilinear_units: The size of t_i; `None` keeps the encodings' size l.
        kernel_initializer: Initializer of the input kernels.
        recurrent_initializer: Initializer of the LSTM recurrent kernels.
        bias_initializer: Initializer of the biases.
        unit_forget_bias: Whether the LSTM forget-gate bias starts at one.
        **kwargs: Base layer arguments.

    Call arguments:
        reference_step: h^r_i, shape `(B, l)`.
        states: `(h_{i-1}, c_{i-1})`, the LSTM's states, each `(B, u)`.
        query: h^q, shape `(B, Tq, l)`.
        query_mask: `(B, Tq)` bool, True on valid query steps; `None` means all.
        direction: 0 for the forward LSTM, 1 for the backward one.

    Returns:
        `((h_i, c_i), alpha_i)`: the new states, each `(B, u)`, and the attention `(B, Tq)`.
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

    def build(self, reference_step_shape, states_shape=None, query_shape=None, **shapes):
        dim = reference_step_shape[-1]
        if query_shape is not None and query_shape[-1] != dim:
            raise ValueError(
                f"query and reference encodings must have the same size; got {query_shape[-1]} "
                f"and {dim}."
            )
        units, attention_units = self.units, self.attention_units or self.units

        def weight(shape, initializer, name):
            return self.add_weight(
                shape=shape, initializer=clone_initializer(initializer), name=name
            )

        # Eq. (2).
        self.W_q = weight((dim, attention_units), self.kernel_initializer, "W_q")
        self.W_r = weight((dim, attention_units), self.kernel_initializer, "W_r")
        self.b_m = weight((attention_units,), self.bias_initializer, "b_m")
        self.W_m = weight((units, attention_units), self.kernel_initializer, "W_m")
        self.w = weight((attention_units, 1), self.kernel_initializer, "w")
        self.b = weight((), self.bias_initializer, "b")
        # Eq. (3).
        self.gate = None
        if self.cross_gating:
            self.gate = CrossGate(
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name="cross_gate",
            )
            self.gate.build(((None, dim), (None, dim)))
        # Eq. (5), or the concatenation.
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
        # Eq. (7): the forward and the backward LSTM, stacked on a leading axis.
        directions = len(DIRECTIONS)
        self.lstm_kernel = weight(
            (directions, matching_dim, 4 * units), self.kernel_initializer, "lstm_kernel"
        )
        self.lstm_recurrent_kernel = weight(
            (directions, units, 4 * units), self.recurrent_initializer, "lstm_recurrent_kernel"
        )
        bias_initializer = clone_initializer(self.bias_initializer)
        if self.unit_forget_bias:
            bias_initializer = forget_bias_initializer(units, bias_initializer)
        self.lstm_bias = self.add_weight(
            shape=(directions, 4 * units), initializer=bias_initializer, name="lstm_bias"
        )
        self.built = True

    def attend(self, query, query_mask, reference_step, state):
        """Eq. (2): the attention over the query and the attention-weighted query.

        Args:
            query: h^q, `(B, Tq, l)`.
            query_mask: `(B, Tq)` bool, True on valid query steps, or `None`.
            reference_step: h^r_i, `(B, l)`.
            state: h_{i-1}, the matching LSTM's previous state, `(B, u)`.

        Returns:
            `(h-bar^q_i, alpha_i)`, shapes `(B, l)` and `(B, Tq)`.
        """
        step_projection = (
            ops.matmul(reference_step, self.W_r) + ops.matmul(state, self.W_m) + self.b_m
        )
        attended, alpha = self.attention(
            query, query_mask, ops.matmul(query, self.W_q), step_projection[None]
        )
        return attended[0], alpha[0]

    def attention(self, query, query_mask, query_projection, step_projection):
        """Eq. (2) from its projections, for a caller that computes them apart.

        Args:
            query: h^q, `(B, Tq, l)`.
            query_mask: `(B, Tq)` bool, or `None`.
            query_projection: W^q h^q, `(B, Tq, a)`.
            step_projection: W^r h^r_i + W^m h_{i-1} + b^m, `(n, B, a)`: n rows per pair that
                share its query (the two directions of a loop that runs both; 1 for one).

        Returns:
            `(h-bar^q_i, alpha_i)`, shapes `(n, B, l)` and `(n, B, Tq)`.
        """
        energy = ops.tanh(query_projection + ops.expand_dims(step_projection, -2))  # e_ij
        # w^T e_ij + b as a contraction: compiled with XLA, a product and a sum would make
        # the gradient of w a slow reduction over every row.
        scores = ops.einsum("nbta,a->nbt", energy, ops.squeeze(self.w, -1)) + self.b
        if query_mask is not None:
            scores = ops.where(query_mask, scores, ops.cast(MASKED_SCORE, scores.dtype))
        alpha = ops.softmax(scores, axis=-1)
        return ops.einsum("nbt,btl->nbl", alpha, query), alpha

    def cross_gate(self, attended, reference_step, query_gate=None):
        """Eq. (3): h~^q_i and h~^r_i; the inputs as they are without cross gating.

        Args:
            attended: h-bar^q_i, `(B, l)`.
            reference_step: h^r_i, `(B, l)`.
            query_gate: g^r_i if computed before (`gate.query_gate(h^r_i)`), `(B, l)`.

        Returns:
            `(h~^q_i, h~^r_i)`, each `(B, l)`.
        """
        if self.gate is None:
            return attended, reference_step
        return self.gate((attended, reference_step), query_gate=query_gate)

    def match(self, gated_query, gated_reference):
        """Eq. (5): t_i from h~^q_i and h~^r_i, each `(B, l)`; or their concatenation.

        Returns:
            `(B, m)`: m is `bilinear_units` (or l), or 2 l for the concatenation.
        """
        if self.bilinear is None:
            return ops.concatenate([gated_query, gated_reference], axis=-1)
        return self.bilinear((gated_query, gated_reference))

    def aggregate(self, matched, states, direction: int = 0):
        """Eq. (7): h_i = LSTM(t_i, h_{i-1}), with the LSTM of `direction`.

        Args:
            matched: t_i, `(B, m)`.
            states: `(h_{i-1}, c_{i-1})`, each `(B, u)`.
            direction: 0 for the forward LSTM (h^f), 1 for the backward one (h^b).

        Returns:
            `(h_i, c_i)`, each `(B, u)`.
        """
        state, cell_state = states
        z = (
            ops.matmul(matched, self.lstm_kernel[direction])
            + ops.matmul(state, self.lstm_recurrent_kernel[direction])
            + self.lstm_bias[direction]
        )
        return lstm_cell(z, cell_state)

    def call(self, reference_step, states, query, query_mask=None, direction: int = 0):
        attended, alpha = self.attend(query, query_mask, reference_step, states[0])
        gated_query, gated_reference = self.cross_gate(attended, reference_step)
        matched = self.match(gated_query, gated_reference)
        return self.aggregate(matched, states, direction), alpha

    def compute_output_spec(self, reference_step, states, query, query_mask=None, direction=0):
        batch, dtype = reference_step.shape[0], self.compute_dtype
        state = keras.KerasTensor((batch, self.units), dtype)
        return (state, state), keras.KerasTensor((batch, query.shape[1]), dtype)

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
