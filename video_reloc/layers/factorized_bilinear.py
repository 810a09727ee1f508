"""Factorized bilinear matching, Eq. (5) (Eq. (6) is its expansion)."""

from __future__ import annotations

import keras
from keras import ops

from video_reloc.layers.initializers import clone_initializer


@keras.saving.register_keras_serializable(package="video_reloc")
class FactorizedBilinear(keras.layers.Layer):
    """Factorized bilinear matching, Eq. (5) of Feng et al. (ECCV 2018).

    For every output dimension j, both inputs are projected to a rank-k space by the SAME
    projection F_j, b^f_j (as the original release does), and the output is their dot product:

        h^q_j = F_j x + b^f_j,   h^r_j = F_j y + b^f_j,   t_j = h^q_j . h^r_j

    The weights are the F_j stacked, `F` of shape `(l_in, units * k)` (unit-major), and the b^f_j
    stacked, `b_f` of shape `(units * k,)`: k * l_in * (units + 1) parameters for
    `units = l_in`, instead of the l^3 + l of Eq. (4).

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
        self.F = self.add_weight(
            shape=(x_shape[-1], self._output_dim * self.rank),
            initializer=clone_initializer(self.kernel_initializer),
            name="F",
        )
        self.b_f = self.add_weight(
            shape=(self._output_dim * self.rank,),
            initializer=clone_initializer(self.bias_initializer),
            name="b_f",
        )
        self.built = True

    def call(self, inputs):
        x, y = inputs
        # Each input has a matmul of its own with the shared F: one matmul of the two stacked
        # turns XLA:CPU's matrix-vector products into a general matmul, and adds a split and a
        # concatenation to the gradient.
        projected_x = ops.matmul(x, self.F) + self.b_f  # F_j x + b^f_j for every j
        projected_y = ops.matmul(y, self.F) + self.b_f  # F_j y + b^f_j
        rank_shape = (-1, self._output_dim, self.rank)
        t = ops.sum(ops.reshape(projected_x, rank_shape) * ops.reshape(projected_y, rank_shape), -1)
        return ops.reshape(t, (*ops.shape(x)[:-1], self._output_dim))

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
