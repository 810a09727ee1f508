"""An LSTM over whole sequences with its input projection hoisted out of the time loop."""

from __future__ import annotations

import keras
from keras import ops

from video_reloc.layers.initializers import clone_initializer
from video_reloc.layers.sequence_ops import project_sequence, run_recurrence


def forget_bias_initializer(units: int, bias_initializer: keras.initializers.Initializer):
    """An initializer of `(..., 4u)` LSTM biases whose forget-gate part starts at one."""

    def initializer(shape, dtype=None):
        lead = tuple(shape[:-1])
        return ops.concatenate(
            [
                bias_initializer((*lead, units), dtype=dtype),
                ops.ones((*lead, units), dtype=dtype),
                bias_initializer((*lead, 2 * units), dtype=dtype),
            ],
            axis=-1,
        )

    return initializer


@keras.saving.register_keras_serializable(package="video_reloc")
class SequenceLSTM(keras.layers.Layer):
    """An LSTM returning every step's hidden state, with the weights of `keras.layers.LSTM`.

    It computes x_t W + b for all steps in one matmul and loops over h U only, reading the
    weights once, which makes training several times faster on a CPU than a step-wise cell.
    It is causal: steps past a sequence's valid length never change the steps before.
    Used for the video encoder, Eq. (1), and the localization LSTM, Eq. (8).

    Args:
        units: Hidden size u.
        kernel_initializer: Initializer of the input kernel `(d, 4u)`.
        recurrent_initializer: Initializer of the recurrent kernel `(u, 4u)`.
        bias_initializer: Initializer of the bias `(4u,)`.
        unit_forget_bias: Whether the forget-gate bias starts at one.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `(B, T, d)`.

    Returns:
        `(B, T, u)` hidden states, zero initial state, gate order (input, forget, cell, output).
    """

    def __init__(
        self,
        units: int,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        recurrent_initializer: str | keras.initializers.Initializer = "orthogonal",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        unit_forget_bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.unit_forget_bias = unit_forget_bias

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], 4 * self.units),
            initializer=clone_initializer(self.kernel_initializer),
            name="kernel",
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, 4 * self.units),
            initializer=clone_initializer(self.recurrent_initializer),
            name="recurrent_kernel",
        )
        bias_initializer = clone_initializer(self.bias_initializer)
        if self.unit_forget_bias:
            bias_initializer = forget_bias_initializer(self.units, bias_initializer)
        self.bias = self.add_weight(
            shape=(4 * self.units,), initializer=bias_initializer, name="bias"
        )
        self.built = True

    def call(self, inputs):
        return self.recur(self.project(inputs))

    def project(self, inputs):
        """The input projection x W + b of every step: `(B, T, d)` to time major `(T, B, 4u)`.

        `call` is `recur(project(inputs))`; apart, a caller can run the projection, the one
        large matmul, as a computation of its own.
        """
        return project_sequence(inputs, self.kernel, self.bias)

    def recur(self, projected):
        """The loop over h U: projected inputs `(T, B, 4u)` to hidden states `(B, T, u)`."""
        return run_recurrence(projected, self.recurrent_kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "unit_forget_bias": self.unit_forget_bias,
            }
        )
        return config
