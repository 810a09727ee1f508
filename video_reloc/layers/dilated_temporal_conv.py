"""Residual blocks of masked, dilated temporal convolutions: context over time, at once."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from video_reloc.layers.initializers import clone_initializer
from video_reloc.layers.masking import step_mask


@keras.saving.register_keras_serializable(package="video_reloc")
class DilatedTemporalConv(keras.layers.Layer):
    """Residual blocks of dilated temporal convolutions over valid steps only.

    Every block convolves its input, after a layer normalization, at steps `t - r`, `t` and
    `t + r` (r the block's dilation; `kernel_size` taps in general) and adds the result to its
    input (pre-norm residual):

        x <- x + Dropout(ReLU(W_{-1} LN(x)_{t-r} + W_0 LN(x)_t + W_1 LN(x)_{t+r} + b))

    Steps past a sequence's valid length are zeroed before every block, so a valid step reads
    exactly what it would read from the unpadded sequence padded with zeros: junk after the
    valid length never changes a valid output. With three taps and dilations d_1 ... d_n, a
    step sees 1 + 2 (d_1 + ... + d_n) steps around it (81 for 1, 3, 9, 27). The cost is
    linear in the sequence length.

    Args:
        units: Width of the blocks; an input of another width is first projected to it.
            `None`: the input's width.
        dilations: One block per dilation.
        kernel_size: Taps per block (odd).
        dropout: Dropout rate on each block's residual branch.
        kernel_initializer: Initializer of every kernel.
        bias_initializer: Initializer of every bias.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `(B, T, d)`.
        lengths: Optional `(B,)` int valid lengths (`None`: every step is valid).
        training: Whether dropout is active.

    Returns:
        `(B, T, units)`, zero past the valid lengths.
    """

    def __init__(
        self,
        units: int | None = None,
        dilations: Sequence[int] = (1, 2, 4),
        kernel_size: int = 3,
        dropout: float = 0.0,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be a positive odd number, got {kernel_size}.")
        if any(int(d) < 1 for d in dilations):
            raise ValueError(f"`dilations` must be positive, got {list(dilations)}.")
        self.units = units
        self.dilations = [int(d) for d in dilations]
        self.kernel_size = kernel_size
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        units = self.units or input_dim
        self.input_projection = None
        if units != input_dim:
            self.input_projection = keras.layers.Dense(
                units,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name="input_projection",
            )
            self.input_projection.build(input_shape)
        norms, convolutions = [], []
        for n, dilation in enumerate(self.dilations):
            norm = keras.layers.LayerNormalization(dtype=self.dtype_policy, name=f"norm_{n}")
            norm.build((*input_shape[:-1], units))
            conv = keras.layers.Conv1D(
                units,
                self.kernel_size,
                dilation_rate=dilation,
                padding="same",
                activation="relu",
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name=f"conv_{n}_dilation_{dilation}",
            )
            conv.build((*input_shape[:-1], units))
            norms.append(norm)
            convolutions.append(conv)
        # Tuples: tf.train.Checkpoint tracks a Keras layer's tuples of layers, not its lists.
        self.norms, self.convolutions = tuple(norms), tuple(convolutions)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def call(self, inputs, lengths=None, training=False):
        mask = step_mask(inputs, lengths)
        x = inputs if self.input_projection is None else self.input_projection(inputs)
        x = x * mask
        for norm, conv in zip(self.norms, self.convolutions):
            h = conv(norm(x) * mask)
            x = (x + self.dropout_layer(h, training=training)) * mask
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units or input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "dilations": list(self.dilations),
                "kernel_size": self.kernel_size,
                "dropout": self.dropout,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
