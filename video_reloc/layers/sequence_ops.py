"""Length-aware sequence helpers and the LSTM recurrence shared by the layers (no weights)."""

from __future__ import annotations

import tensorflow as tf
from keras import ops


def sequence_mask(lengths, maxlen):
    """Boolean mask of valid steps.

    Args:
        lengths: Valid lengths, shape `(B,)` int.
        maxlen: Number of steps T (int or scalar tensor).

    Returns:
        Mask of shape `(B, T)`, True where the step index is below the length.
    """
    steps = ops.arange(maxlen, dtype="int32")
    return ops.expand_dims(steps, 0) < ops.expand_dims(ops.cast(lengths, "int32"), 1)


def reverse_sequence(inputs, lengths, time_major: bool = False):
    """Reverses each row within its valid length; steps past the length stay in place.

    Args:
        inputs: Tensor of shape `(B, T, ...)`, or `(T, B, ...)` with `time_major`.
        lengths: Valid lengths, shape `(B,)` int.
        time_major: Whether time is the leading axis.

    Returns:
        Tensor of the shape of `inputs` with `out[b, t] = inputs[b, lengths[b] - 1 - t]` for
        `t < lengths[b]` and `out[b, t] = inputs[b, t]` elsewhere (the same with `[t, b]` when
        time major). Applying it twice gives back `inputs`.
    """
    # TensorFlow's own op: its gradient is the same reversal, where a gather's gradient (the
    # `keras.ops.take_along_axis` way) is a scatter-add.
    seq_axis, batch_axis = (0, 1) if time_major else (1, 0)
    return tf.reverse_sequence(
        inputs, ops.cast(lengths, "int32"), seq_axis=seq_axis, batch_axis=batch_axis
    )


def lstm_cell(z, c):
    """The LSTM update from pre-activations, gate order (input, forget, cell, output).

    Args:
        z: `(..., 4u)` pre-activations x W + h U + b.
        c: `(..., u)` previous cell state.

    Returns:
        `(h, c)`, the new hidden and cell states, each `(..., u)`.
    """
    zi, zf, zc, zo = ops.split(z, 4, axis=-1)
    c = ops.sigmoid(zf) * c + ops.sigmoid(zi) * ops.tanh(zc)
    return ops.sigmoid(zo) * ops.tanh(c), c


def scan(step, carry, inputs, steps, num_outputs=1, compile_step=False):
    """Runs `step` over the leading (time) axis of `inputs` and stacks its outputs.

    `keras.ops.scan` needs outputs shaped like the carry, which an attention map is not, so
    this is a plain `tf.while_loop` (with `maximum_iterations`, so XLA can compile it).
    Weights should be read into tensors before the loop: reads inside it would be stacked per
    step for the gradient.

    Args:
        step: `(carry, xs) -> (carry, outputs)`; `outputs` a tensor or a tuple of
            `num_outputs` tensors of the carry's dtype.
        carry: Initial carry (a tuple of tensors).
        inputs: List of time-major tensors `(T, ...)`.
        steps: T.
        num_outputs: 1 for a single output tensor, else the tuple's length.
        compile_step: Whether to compile `step` with XLA, so that each iteration, and each
            iteration of the gradient's loop, runs as one fused computation instead of dozens
            of TF ops. Not inside a function that is itself compiled with XLA: that fuses the
            step anyway, and the compiled step's gradient would not compile there (its
            concatenations' axes arrive as arguments, not constants).

    Returns:
        The stacked outputs, each `(T, ...)`, with the structure of `step`'s outputs.
    """
    if compile_step:
        step = tf.function(step, jit_compile=True, autograph=False)
    dtype = carry[0].dtype
    input_arrays = [
        tf.TensorArray(x.dtype, size=steps, element_shape=x.shape[1:]).unstack(x) for x in inputs
    ]
    output_arrays = [tf.TensorArray(dtype, size=steps) for _ in range(num_outputs)]

    def body(i, carry, arrays):
        new_carry, outputs = step(carry, [a.read(i) for a in input_arrays])
        arrays = [a.write(i, y) for a, y in zip(arrays, tf.nest.flatten(outputs))]
        return i + 1, new_carry, arrays

    _, _, output_arrays = tf.while_loop(
        lambda i, *_: i < steps,
        body,
        (tf.constant(0), carry, output_arrays),
        maximum_iterations=steps,
    )
    stacked = [a.stack() for a in output_arrays]
    return tuple(stacked) if num_outputs > 1 else stacked[0]


def compiled_stage(function, name: str):
    """`function` as an XLA computation of its own, named `name`: a stage of a staged path.

    Called from a graph that is not itself compiled with XLA, TensorFlow runs stages that do
    not depend on each other at once.
    """

    def stage(*args):
        return function(*args)

    stage.__name__ = name
    return tf.function(stage, jit_compile=True, autograph=False)


def project_sequence(inputs, kernel, bias):
    """The input projection x W + b of an LSTM for all steps, time major.

    Args:
        inputs: `(B, T, d)`.
        kernel: `(d, 4u)`.
        bias: `(4u,)`.

    Returns:
        `(T, B, 4u)`.
    """
    # Time major before the projection: the transpose moves d values per step, not 4u, and
    # the encoder's features need no gradient, so its transpose has none either.
    return ops.matmul(ops.transpose(inputs, (1, 0, 2)), kernel) + bias


def run_recurrence(projected, recurrent_kernel):
    """The LSTM loop over projected inputs, zero initial state.

    Args:
        projected: x W + b, time major `(T, B, 4u)` (`project_sequence`).
        recurrent_kernel: `(u, 4u)`.

    Returns:
        Hidden states `(B, T, u)`.
    """
    units = ops.shape(recurrent_kernel)[0]
    recurrent_kernel = ops.convert_to_tensor(recurrent_kernel)
    zeros = ops.zeros((ops.shape(projected)[1], units), dtype=projected.dtype)

    def step(carry, xs):
        h, c = carry
        h, c = lstm_cell(xs[0] + ops.matmul(h, recurrent_kernel), c)
        return (h, c), h

    states = scan(step, (zeros, zeros), [projected], ops.shape(projected)[0])
    return ops.transpose(states, (1, 0, 2))


def cudnn_params(kernel, recurrent_kernel, bias):
    """The weights of `keras.layers.LSTM` in cuDNN's layout, for `cudnn_lstm`.

    cuDNN's canonical LSTM parameters are one flat vector: the input weights of the gates,
    then their recurrent weights, each `(u, d)` or `(u, u)` row-major (the transpose of the
    Keras kernels' columns), then an input bias and a recurrent bias per gate. The input biases
    are zero, so that the one bias of Keras is the recurrent one, as `keras.layers.LSTM` does.
    The gate order is (input, forget, cell, output), cuDNN's as Keras'; ROCm's MIOpen has
    (input, forget, output, cell).

    Args:
        kernel: `(d, 4u)`.
        recurrent_kernel: `(u, 4u)`.
        bias: `(4u,)`.

    Returns:
        `(4u (d + u) + 8u,)`.
    """
    gates = [0, 1, 3, 2] if tf.sysconfig.get_build_info().get("is_rocm_build") else [0, 1, 2, 3]
    weights = [tf.split(k, 4, axis=1) for k in (kernel, recurrent_kernel)]
    weights = [w[g] for w in weights for g in gates]
    biases = tf.split(tf.concat([tf.zeros_like(bias), bias], 0), 8)
    biases = [biases[g] for g in gates] + [biases[4 + g] for g in gates]
    return tf.concat([tf.reshape(tf.transpose(w), [-1]) for w in weights] + biases, axis=0)


def cudnn_lstm(inputs, kernel, recurrent_kernel, bias):
    """The LSTM of `project_sequence` and `run_recurrence` as cuDNN's kernel (GPU only).

    Args:
        inputs: `(B, T, d)`.
        kernel: `(d, 4u)`.
        recurrent_kernel: `(u, 4u)`.
        bias: `(4u,)`.

    Returns:
        Hidden states `(B, T, u)`, zero initial state.
    """
    kernel, recurrent_kernel, bias = (
        tf.convert_to_tensor(w) for w in (kernel, recurrent_kernel, bias)
    )
    zeros = tf.zeros((1, tf.shape(inputs)[0], recurrent_kernel.shape[0]), inputs.dtype)
    outputs, _, _, _ = tf.raw_ops.CudnnRNN(
        input=tf.transpose(inputs, (1, 0, 2)),
        input_h=zeros,
        input_c=zeros,
        params=cudnn_params(kernel, recurrent_kernel, bias),
        rnn_mode="lstm",
        is_training=True,
    )
    return tf.transpose(outputs, (1, 0, 2))
