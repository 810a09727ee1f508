"""Factorized bilinear matching, Eqs. (4) to (6)."""

from __future__ import annotations

import keras
from keras import ops

from video_reloc.layers.initializers import clone_initializer


def factorized_bilinear(x, y, kernel, bias, rank: int):
    """Eq. (5) with explicit weights: t_j = (F_j x + b^f_j) . (F_j y + b^f_j).

    Each input has a matmul of its own with the shared F. One matmul of the two stacked is
    slower: for one row, XLA:CPU leaves its fast matrix-vector product for a general matmul of
    two rows; for a training batch, the stacking's gradient (a split and a concatenation in
    the compiled step) costs about 5% of a training step.

    Args:
        x: `(..., l_in)`.
        y: `(..., l_in)`, the same shape as `x`.
        kernel: The stacked F_j, `(l_in, units * rank)`, unit-major.
        bias: The stacked b^f_j, `(units * rank,)`.
        rank: k.

    Returns:
        `(..., units)`.
    """
    projected_x = ops.matmul(x, kernel) + bias
    projected_y = ops.matmul(y, kernel) + bias
    rank_shape = (-1, ops.shape(kernel)[-1] // rank, rank)
    t = ops.sum(ops.reshape(projected_x, rank_shape) * ops.reshape(projected_y, rank_shape), -1)
    return ops.reshape(t, (*ops.shape(x)[:-1], ops.shape(t)[-1]))


@keras.saving.register_keras_serializable(package="video_reloc")
class FactorizedBilinear(keras.layers.Layer):
    """Factorized bilinear matching, Eq. (5) of Feng et al. (ECCV 2018).

    For every output dimension j, both inputs are projected to a rank-k space by the SAME
    projection F_j, b^f_j (as the original release does), and the output is their dot product:

        h^q_j = F_j x + b^f_j,   h^r_j = F_j y + b^f_j,   t_j = h^q_j . h^r_j

    This costs k * l_in * (units + ...) parameters instead of the l^3 of Eq. (4).

    Args:
        units: Output dimension l (the number of F_j). `None` keeps the input dimension.
        rank: The projected dimension k of each F_j (the paper uses 8).
        kernel_initializer: Initializer of the stacked F_j, shape `(l_in, units * rank)`.
        bias_initializer: Initializer of the stacked b^f_j, shape `(units * rank,)`.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: A pair `(x, y)` of tensors of shape `(..., l_in)`, the same shape.

    Returns:
        The matching result t of shape `(..., units)`.
    """

    def __init__(
        self,
        units: int | None = None,
        rank: int = 8,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if units is not None and units <= 0:
            raise ValueError(f"`units` must be positive or None, got {units}.")
        if rank <= 0:
            raise ValueError(f"`rank` must be positive, got {rank}.")
        self.units = units
        self.rank = rank
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        x_shape, y_shape = input_shape
        if x_shape[-1] != y_shape[-1]:
            raise ValueError(
                "FactorizedBilinear shares one projection between its inputs, so their last "
                f"dimensions must agree; got {x_shape[-1]} and {y_shape[-1]}."
            )
        self._output_dim = self.units if self.units is not None else x_shape[-1]
        self.projection = keras.layers.Dense(
            self._output_dim * self.rank,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="projection",
        )
        self.projection.build(x_shape)
        self.built = True

    def call(self, inputs):
        x, y = inputs
        return factorized_bilinear(x, y, self.projection.kernel, self.projection.bias, self.rank)

    def compute_output_shape(self, input_shape):
        x_shape = tuple(input_shape[0])
        units = self.units if self.units is not None else x_shape[-1]
        return (*x_shape[:-1], units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "rank": self.rank,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
