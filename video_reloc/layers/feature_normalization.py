"""Normalization of each video's features over its own valid steps, before the encoder."""

from __future__ import annotations

import keras
from keras import ops

from video_reloc.layers.sequence_ops import sequence_mask

MODES = ("standardize", "center")


@keras.saving.register_keras_serializable(package="video_reloc")
class FeatureNormalization(keras.layers.Layer):
    """Normalizes every sequence (a query, a reference) by statistics of its own valid steps.

    Features such as C3D's are dominated by what a whole video shares (its scene), which says
    nothing about the action; a sequence's own mean takes it away. With `x_t` the valid steps
    `t < n` of one sequence and `mu = (1/n) sum_t x_t`:

    - `"standardize"`: every dimension to zero mean and unit variance over the sequence,
      `(x_t - mu) / sqrt(var + epsilon)` with `var = (1/n) sum_t (x_t - mu)^2` per dimension
      (what `FrameLevelBaseline(normalization="standardize")` does before matching);
    - `"center"`: `(x_t - mu) / sqrt(s + epsilon)` with one scale per sequence,
      `s = (1/(n D)) sum_t |x_t - mu|^2`, which keeps the dimensions' relative scales.

    A sequence of one step becomes zeros. Steps at or past the length are set to zero and never
    change the valid ones. The layer has no weights, so a SavedModel of the model carries it.

    Args:
        mode: `"standardize"` or `"center"`.
        epsilon: Added to the variance.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `(B, T, D)` features.
        lengths: `(B,)` int valid steps; `None` means all `T`.

    Returns:
        `(B, T, D)` normalized features.
    """

    def __init__(self, mode: str = "standardize", epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
        self.mode = mode
        self.epsilon = epsilon

    def call(self, inputs, lengths=None):
        steps = ops.shape(inputs)[1]
        if lengths is None:
            lengths = ops.full((ops.shape(inputs)[0],), steps, dtype="int32")
        mask = ops.cast(sequence_mask(lengths, steps), inputs.dtype)[..., None]  # (B, T, 1)
        count = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)  # (B, 1, 1)
        mean = ops.sum(inputs * mask, axis=1, keepdims=True) / count
        centered = (inputs - mean) * mask
        variance = ops.sum(ops.square(centered), axis=1, keepdims=True) / count  # (B, 1, D)
        if self.mode == "center":
            variance = ops.mean(variance, axis=-1, keepdims=True)
        return centered * ops.rsqrt(variance + self.epsilon)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "epsilon": self.epsilon})
        return config
