"""A projection of each sequence's features standardized over its own steps, and as they are."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from video_reloc.layers.feature_normalization import FeatureNormalization
from video_reloc.layers.initializers import clone_initializer
from video_reloc.layers.masking import step_mask

VIEWS = ("standardized", "scaled")


@keras.saving.register_keras_serializable(package="video_reloc")
class NormalizedProjection(keras.layers.Layer):
    """Projects every step of a sequence seen two ways, normalized by the sequence itself.

    What a whole video shares (its scene, its camera) dominates C3D-like features, and taking
    each video's own statistics away is what makes frame-level matching work on them; but a
    short query's own mean is also the action it shows, which standardization takes away too.
    So the layer projects both views, each to its share of the output, side by side:

        h_t = [W_s (x_t - mu) / sqrt(sigma^2 + eps) ; W_r x_t / sqrt(rms^2 + eps)] + b

    where `mu` and `sigma^2` (per dimension) are the mean and variance of the sequence's valid
    steps (`FeatureNormalization("standardize")`, the normalization of the normalized
    frame-level baseline) and `rms^2` the mean of the squares of all their values (a scale
    only). Two views cost one projection of the output's width. Padded steps do not count and
    come out as zeros, so junk after a valid length changes nothing.

    Args:
        units: The output width, shared evenly by the views (the first view gets the
            remainder).
        views: A non-empty subset of `("standardized", "scaled")`, in the output's order.
        epsilon: Added to `sigma^2` and `rms^2`.
        kernel_initializer: Initializer of each view's kernel.
        bias_initializer: Initializer of the bias.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `(B, T, D)` features.
        lengths: Optional `(B,)` int valid lengths (`None`: every step is valid).

    Returns:
        `(B, T, units)`, zero past the valid lengths.
    """

    def __init__(
        self,
        units: int,
        views: Sequence[str] = VIEWS,
        epsilon: float = 1e-3,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        views = [str(v) for v in views]
        if not views or any(v not in VIEWS for v in views) or len(set(views)) != len(views):
            raise ValueError(f"`views` must be a non-empty subset of {VIEWS}, got {views}.")
        if units < len(views):
            raise ValueError(f"`units` must be at least the number of views, got {units}.")
        self.units = units
        self.views = views
        self.epsilon = epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def view_units(self) -> list[int]:
        """The output width of each view, in the order of `views`."""
        share, remainder = divmod(self.units, len(self.views))
        return [share + (remainder if n == 0 else 0) for n in range(len(self.views))]

    def build(self, input_shape):
        kernels = []
        for view, units in zip(self.views, self.view_units()):
            kernels.append(
                self.add_weight(
                    shape=(input_shape[-1], units),
                    initializer=clone_initializer(self.kernel_initializer),
                    name=f"{view}_kernel",
                )
            )
        self.kernels = tuple(kernels)  # a tuple: tf.train.Checkpoint tracks it
        self.bias = self.add_weight(
            shape=(self.units,), initializer=clone_initializer(self.bias_initializer), name="bias"
        )
        self.standardization = None
        if "standardized" in self.views:
            self.standardization = FeatureNormalization(
                "standardize", self.epsilon, name="standardization"
            )
        self.built = True

    def call(self, inputs, lengths=None):
        mask = step_mask(inputs, lengths)
        x = inputs * mask
        outputs = []
        for view, kernel in zip(self.views, self.kernels):
            if view == "standardized":
                outputs.append(ops.matmul(self.standardization(inputs, lengths), kernel))
            else:
                count = ops.maximum(ops.sum(mask, axis=(1, 2), keepdims=True), 1.0)  # (B, 1, 1)
                mean_square = ops.sum(ops.square(x), axis=(1, 2), keepdims=True) / count
                mean_square = mean_square / ops.cast(ops.shape(x)[-1], x.dtype)
                outputs.append(ops.matmul(x, kernel) * ops.rsqrt(mean_square + self.epsilon))
        output = ops.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
        return (output + self.bias) * mask

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "views": list(self.views),
                "epsilon": self.epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
