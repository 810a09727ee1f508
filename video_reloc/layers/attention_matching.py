"""The matching of Sec. 3.2 in both directions: `MatchingCell` looped over the reference."""

from __future__ import annotations

import contextlib
import functools
import inspect

import keras
import tensorflow as tf
from keras import ops

from video_reloc.layers.matching_cell import DIRECTIONS, MatchingCell
from video_reloc.layers.sequence_ops import (
    compiled_stage,
    lstm_cell,
    reverse_sequence,
    scan,
    sequence_mask,
)

IMPLEMENTATIONS = ("loop", "hoisted", "fused", "staged")


@keras.saving.register_keras_serializable(package="video_reloc")
class AttentionMatching(keras.layers.Layer):
    """Cross gated bilinear matching of Sec. 3.2 of Feng et al. (ECCV 2018), in both directions.

    A `MatchingCell` (Eqs. 2, 3, 5 and 7) runs over the reference steps, as `keras.layers.LSTM`
    runs its `LSTMCell`: forward, giving h^f, and backward, giving h^b. The backward direction
    reads the reference reversed within its valid length (so padding never comes before valid
    steps), and its states are reversed back. h^m, the concatenation of h^f and h^b, is the
    caller's to make (`VideoRelocModel` concatenates them).

    `implementation` picks one of four paths, which give the same values and gradients:

    - `"loop"`: each direction is a loop over reference steps that calls the cell. The
      reference the others are tested against.
    - `"hoisted"` (the default): what does not depend on the matching state (W^q h^q, and
      W^r h^r + b^m and g^r of Eq. 3 for every step) is computed before the loop, the weights
      are read once, both directions run in one loop over 2B rows, and W^m h_{i-1} shares one
      product with the LSTM's h_{i-1} U. Right anywhere, including inside a function compiled
      with XLA as a whole.
    - `"fused"`: `"hoisted"` with each step of the loop, and of its gradient's loop, compiled
      as one XLA computation. For training steps that are not themselves compiled with XLA
      (it cannot be nested in one).
    - `"staged"`: one XLA computation prepares both directions' step inputs, then each
      direction's loop is an XLA computation of its own. Called from a graph that is not
      itself compiled with XLA (the exported signature), TensorFlow runs the two directions at
      once, one per core. For inference: it has no gradient (XLA cannot hand a loop's
      gradient accumulators out of a computation of its own).

    Args:
        units: u, the size of each matching LSTM (l = 128 in the paper).
        attention_units: Size of the attention space of Eq. (2); `None` means `units`.
        cross_gating: Whether to apply Eq. (3).
        matching: `"bilinear"` for Eq. (5) or `"concat"` for the ablation.
        bilinear_rank: k of Eq. (5) (8 in the paper).
        bilinear_units: Output size of the bilinear matching; `None` keeps the input size.
        kernel_initializer: Initializer of the input kernels.
        recurrent_initializer: Initializer of the LSTM recurrent kernels.
        bias_initializer: Initializer of the biases.
        unit_forget_bias: Whether the LSTM forget-gate bias starts at one.
        implementation: The path of `call`s that do not name one; one of `IMPLEMENTATIONS`.
        **kwargs: Base layer arguments.

    Call arguments:
        query: Encoded query h^q, shape `(B, Tq, l)`.
        reference: Encoded reference h^r, shape `(B, Tr, l)`.
        query_length: Valid query steps, shape `(B,)` int; `None` means all `Tq`.
        reference_length: Valid reference steps, shape `(B,)` int; `None` means all `Tr`.
        return_attention: Whether to also return the forward attention weights.
        implementation: This call's path; `None` means the layer's `implementation`.

    Returns:
        `(h^f, h^b)`, the forward and backward matching states, each `(B, Tr, u)`; with
        `return_attention`, `((h^f, h^b), alpha)`, alpha the forward attention `(B, Tr, Tq)`.
        Steps at or past `reference_length` hold values that no valid step depends on.
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
        implementation: str = "hoisted",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_implementation(implementation)
        self.implementation = implementation
        self.cell = MatchingCell(
            units=units,
            attention_units=attention_units,
            cross_gating=cross_gating,
            matching=matching,
            bilinear_rank=bilinear_rank,
            bilinear_units=bilinear_units,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias,
            dtype=self.dtype_policy,
            name="cell",
        )

    @property
    def units(self) -> int:
        return self.cell.units

    def build(self, query_shape, reference_shape=None, **shapes):
        self.cell.build(reference_shape or query_shape, query_shape=query_shape)
        self.built = True

    def call(
        self,
        query,
        reference,
        query_length=None,
        reference_length=None,
        return_attention: bool = False,
        implementation: str | None = None,
    ):
        implementation = implementation or self.implementation
        _check_implementation(implementation)
        batch = ops.shape(reference)[0]
        if reference_length is None:
            reference_length = ops.full((batch,), ops.shape(reference)[1], dtype="int32")
        query_steps = ops.shape(query)[1]
        if query_length is None:
            query_mask = ops.ones((batch, query_steps), dtype="bool")
        else:
            query_mask = sequence_mask(query_length, query_steps)
        path = {
            "loop": _loop,
            "hoisted": _hoisted,
            "fused": _fused,
            "staged": _staged,
        }[implementation]
        forward, backward, attention = path(
            self.cell, query, query_mask, reference, reference_length, return_attention
        )
        return ((forward, backward), attention) if return_attention else (forward, backward)

    def compute_output_spec(
        self,
        query,
        reference,
        query_length=None,
        reference_length=None,
        return_attention: bool = False,
        **kwargs,
    ):
        batch, steps = reference.shape[0], reference.shape[1]
        dtype = self.compute_dtype
        matched = tuple(keras.KerasTensor((batch, steps, self.units), dtype) for _ in DIRECTIONS)
        if return_attention:
            return matched, keras.KerasTensor((batch, steps, query.shape[1]), dtype)
        return matched

    def get_config(self):
        config = super().get_config()
        cell_config = self.cell.get_config()
        config.update({key: cell_config[key] for key in _CELL_ARGUMENTS})
        config["implementation"] = self.implementation
        return config


# The constructor arguments that `AttentionMatching` hands to its `MatchingCell`.
_CELL_ARGUMENTS = tuple(inspect.signature(MatchingCell.__init__).parameters)[1:-1]


def _check_implementation(implementation: str) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` must be one of {IMPLEMENTATIONS}, got {implementation!r}."
        )


# Each path: `(cell, query, query_mask, reference, reference_length, return_attention)` to
# `(h^f, h^b, alpha or None)`, the states `(B, Tr, u)` in the reference's step order.


def _loop(cell, query, query_mask, reference, reference_length, return_attention):
    """The plain path: for each direction, a loop over reference steps that calls the cell."""
    results = []
    for direction, steps in enumerate([reference, reverse_sequence(reference, reference_length)]):
        zeros = ops.zeros((ops.shape(reference)[0], cell.units), dtype=query.dtype)

        def step(states, xs, direction=direction):
            states, alpha = cell(xs[0], states, query, query_mask, direction=direction)
            return states, (states[0], alpha)

        time_major = ops.transpose(steps, (1, 0, 2))
        states, alpha = scan(step, (zeros, zeros), [time_major], ops.shape(time_major)[0], 2)
        results.append((ops.transpose(states, (1, 0, 2)), ops.transpose(alpha, (1, 0, 2))))
    (forward, attention), (backward, _) = results
    backward = reverse_sequence(backward, reference_length)
    return forward, backward, attention if return_attention else None


def _hoisted(cell, query, query_mask, reference, reference_length, return_attention, fused=False):
    """The hoisted path: the state-independent terms before the loop, both directions in it."""
    with _weights_read_once(cell):
        query_projection, step_inputs = _prepare(cell, query, reference, reference_length)
        step_inputs = [ops.concatenate(pair, axis=1) for pair in zip(*step_inputs)]
        out = _run(
            cell,
            query,
            query_mask,
            query_projection,
            step_inputs,
            range(len(DIRECTIONS)),
            return_attention,
            compile_step=fused,
        )
    states, attention = out if return_attention else (out, None)
    forward, backward = ops.split(ops.transpose(states, (1, 0, 2)), 2, axis=0)
    backward = reverse_sequence(backward, reference_length)
    if return_attention:
        attention = ops.transpose(attention[:, : ops.shape(reference)[0]], (1, 0, 2))
    return forward, backward, attention


def _fused(*args):
    """The hoisted path with each step of the loop compiled with XLA."""
    return _hoisted(*args, fused=True)


def _staged(cell, query, query_mask, reference, reference_length, return_attention):
    """The hoisted path as XLA computations: the preparation, then each direction's loop."""

    def prepare(query, reference, reference_length):
        with _weights_read_once(cell):
            return _prepare(cell, query, reference, reference_length)

    def run(direction, query, query_mask, query_projection, step_inputs, reference_length):
        with _weights_read_once(cell):
            out = _run(
                cell,
                query,
                query_mask,
                query_projection,
                step_inputs,
                (direction,),
                return_attention,
            )
        states, attention = out if return_attention else (out, None)
        states = ops.transpose(states, (1, 0, 2))
        if direction == 1:
            states = reverse_sequence(states, reference_length)
        return states, (ops.transpose(attention, (1, 0, 2)) if return_attention else None)

    query_projection, step_inputs = compiled_stage(prepare, "_prepare_directions")(
        query, reference, reference_length
    )
    (forward, attention), (backward, _) = (
        compiled_stage(functools.partial(run, direction), f"_match_direction_{name}")(
            query, query_mask, query_projection, step_inputs[direction], reference_length
        )
        for direction, name in enumerate(DIRECTIONS)
    )
    return forward, backward, attention


@contextlib.contextmanager
def _weights_read_once(cell: MatchingCell):
    """Inside, the cell's weights are tensors read once, on entry (`keras.StatelessScope`).

    A loop traced inside then reads no variable at each step: such reads would be stacked per
    step for the gradient.
    """
    # `tf.convert_to_tensor` reads the variable; `keras.ops.convert_to_tensor` would return it.
    values = [(v, tf.convert_to_tensor(v)) for v in cell.weights]
    with keras.StatelessScope(values, initialize_variables=False):
        yield


def _prepare(cell, query, reference, reference_length):
    """What the loop reads that does not depend on the matching state, for both directions.

    The projections act on each step alone, so they are computed for the forward steps only,
    and the backward direction's are their reversal within the lengths.

    Args:
        cell: The `MatchingCell`, inside `_weights_read_once`.
        query: h^q, `(B, Tq, l)`.
        reference: h^r, `(B, Tr, l)`.
        reference_length: `(B,)` int.

    Returns:
        `(query_projection, (forward, backward))`: W^q h^q `(B, Tq, a)`, and each direction's
        time-major step inputs, each `(Tr, B, .)`: h^r_i, W^r h^r_i + b^m and, with cross
        gating, g^r_i of Eq. (3).
    """
    query_projection = ops.matmul(query, cell.W_q)
    # Time major once, before the projections: one transpose (and one in the gradient), not
    # one per step input.
    reference = ops.transpose(reference, (1, 0, 2))
    forward = [reference, ops.matmul(reference, cell.W_r) + cell.b_m]
    if cell.gate is not None:
        forward.append(cell.gate.query_gate(reference))
    backward = [reverse_sequence(x, reference_length, time_major=True) for x in forward]
    return query_projection, (forward, backward)


def _run(
    cell,
    query,
    query_mask,
    query_projection,
    step_inputs,
    directions,
    return_attention,
    compile_step=False,
):
    """The loop of the hoisted paths over the rows of `directions`, one after the other.

    Args:
        cell: The `MatchingCell`, inside `_weights_read_once`.
        query: h^q, `(B, Tq, l)`, shared by the directions: the loop's gradient then
            accumulates one copy of it (and of W^q h^q) per step, not one per direction.
        query_mask: `(B, Tq)` bool.
        query_projection: W^q h^q, `(B, Tq, a)`.
        step_inputs: The time-major step inputs of `_prepare`, `(Tr, n * B, .)` for n
            directions.
        directions: The directions of the rows: indices of the cell's LSTMs.
        return_attention: Whether to also return alpha.
        compile_step: Whether each step is an XLA computation (`scan`).

    Returns:
        The states `(Tr, n * B, u)`; with `return_attention`, also alpha `(Tr, n * B, Tq)`.
    """
    directions = list(directions)
    n, attention_units = len(directions), cell.W_m.shape[-1]
    # h_{i-1} feeds W^m of Eq. (2) and the LSTM of Eq. (7): one product with [W^m, U].
    lstm_weights = [
        tf.convert_to_tensor(w)  # the tensors read on entry
        for w in (cell.lstm_kernel, cell.lstm_recurrent_kernel, cell.lstm_bias)
    ]
    if n == 1:
        lstm_weights = [w[directions[0]] for w in lstm_weights]
    lstm_kernel, recurrent_kernel, lstm_bias = lstm_weights
    if n == 1:
        state_kernel = ops.concatenate([cell.W_m, recurrent_kernel], axis=-1)
    else:
        state_kernel = ops.concatenate(
            [ops.broadcast_to(cell.W_m, (n, *cell.W_m.shape)), recurrent_kernel], axis=-1
        )

    def step(states, xs):
        state, cell_state = states
        reference_step, reference_projection = xs[0], xs[1]
        # `split`, not slicing: a strided slice's gradient writes a full-size zero tensor.
        state_attention, state_lstm = ops.split(
            _direction_matmul(state, state_kernel), [attention_units], axis=-1
        )
        step_projection = ops.reshape(
            reference_projection + state_attention, (n, -1, attention_units)
        )
        attended, alpha = cell.attention(query, query_mask, query_projection, step_projection)
        attended = ops.reshape(attended, (-1, query.shape[-1]))
        alpha = ops.reshape(alpha, (-1, ops.shape(alpha)[-1]))
        gated_query, gated_reference = cell.cross_gate(
            attended, reference_step, query_gate=xs[2] if cell.gate is not None else None
        )
        matched = cell.match(gated_query, gated_reference)
        state, cell_state = lstm_cell(
            _direction_matmul(matched, lstm_kernel, lstm_bias) + state_lstm, cell_state
        )
        return (state, cell_state), ((state, alpha) if return_attention else state)

    zeros = ops.zeros((ops.shape(step_inputs[0])[1], cell.units), dtype=query_projection.dtype)
    return scan(
        step,
        (zeros, zeros),
        step_inputs,
        ops.shape(step_inputs[0])[0],
        2 if return_attention else 1,
        compile_step=compile_step,
    )


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
