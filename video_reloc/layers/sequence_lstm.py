"""An LSTM over whole sequences: cuDNN's kernel on a GPU, else a hoisted loop."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from video_reloc.layers.initializers import clone_initializer
from video_reloc.layers.sequence_ops import cudnn_lstm, project_sequence, run_recurrence

CUDNN_CHOICES = ("auto", True, False)


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

    Used for the video encoder, Eq. (1), and the localization LSTM, Eq. (8). It is causal:
    steps past a sequence's valid length never change the steps before. As
    `keras.layers.LSTM`, it has two paths that give the same values, behind one switch,
    `use_cudnn`:

    - where a GPU is present, cuDNN's LSTM kernel (`cudnn_lstm`);
    - elsewhere, the hoisted loop: x_t W + b for all steps in one matmul (`project`), then a
      loop over h U only (`recur`), reading the weights once. This is the path of a CPU, and
      the one a computation compiled with XLA needs (XLA cannot compile cuDNN's kernel).

    Args:
        units: Hidden size u.
        kernel_initializer: Initializer of the input kernel `(d, 4u)`.
        recurrent_initializer: Initializer of the recurrent kernel `(u, 4u)`.
        bias_initializer: Initializer of the bias `(4u,)`.
        unit_forget_bias: Whether the forget-gate bias starts at one.
        use_cudnn: `"auto"` takes cuDNN's path where a GPU is present, `True` always (an
            error without a GPU), `False` never.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `(B, T, d)`.
        use_cudnn: This call's choice; `None` means the layer's `use_cudnn`. `False` inside a
            function compiled with XLA.

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
        use_cudnn: str | bool = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_use_cudnn(use_cudnn)
        self.units = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.unit_forget_bias = unit_forget_bias
        self.use_cudnn = use_cudnn
        if use_cudnn in ("auto", True) and tf.config.list_physical_devices("GPU"):
            # As `keras.layers.LSTM`: Keras' `fit` then does not compile the model with XLA.
            self.supports_jit = False

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

    def call(self, inputs, use_cudnn: str | bool | None = None):
        if self.takes_cudnn_path(use_cudnn):
            return cudnn_lstm(inputs, self.kernel, self.recurrent_kernel, self.bias)
        return self.recur(self.project(inputs))

    def takes_cudnn_path(self, use_cudnn: str | bool | None = None) -> bool:
        """Whether a call with `use_cudnn` (`None`: the layer's) runs cuDNN's kernel.

        Raises:
            ValueError: `use_cudnn=True` where no GPU is present.
        """
        use_cudnn = self.use_cudnn if use_cudnn is None else use_cudnn
        _check_use_cudnn(use_cudnn)
        if use_cudnn is False:
            return False
        if not gpu_available():
            if use_cudnn is True:
                raise ValueError(
                    f"{self.name}: use_cudnn=True, but no GPU is present; pass "
                    "use_cudnn='auto' to fall back to the hoisted loop."
                )
            return False
        return True

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
                "use_cudnn": self.use_cudnn,
            }
        )
        return config


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU (the test of `keras.layers.LSTM` for cuDNN's path)."""
    return bool(tf.config.list_logical_devices("GPU"))


def _check_use_cudnn(use_cudnn) -> None:
    if use_cudnn not in CUDNN_CHOICES:
        raise ValueError(f"`use_cudnn` must be one of {CUDNN_CHOICES}, got {use_cudnn!r}.")
