"""Each sequence's features standardized over its own valid steps, inside the model."""

from __future__ import annotations

import keras
from keras import ops

from video_reloc.layers.masking import step_mask

MODES = ("standardize", "center")


@keras.saving.register_keras_serializable(package="video_reloc")
class SequenceStandardization(keras.layers.Layer):
    """Every dimension of a sequence to zero mean (and unit variance) over its valid steps.

    What a whole video shares (its scene, its camera) dominates C3D-like features; taking each
    video's own mean away, and evening out the dimensions' scales, leaves what changes within
    it. This is the normalization of the normalized frame-level baseline, inside the model
    (so the SavedModel carries it). Padded steps do not count and come out as zeros.

    Args:
        mode: `"standardize"` (`(x - mean) / (std + epsilon)`) or `"center"` (`x - mean`).
        epsilon: Added to the standard deviation.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `(B, T, D)` features.
        lengths: Optional `(B,)` int valid lengths (`None`: every step is valid).

    Returns:
        `(B, T, D)`, zero past the valid lengths.
    """

    def __init__(self, mode: str = "standardize", epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
        self.mode = mode
        self.epsilon = epsilon

    def call(self, inputs, lengths=None):
        mask = step_mask(inputs, lengths)
        count = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
        mean = ops.sum(inputs * mask, axis=1, keepdims=True) / count
        centred = (inputs - mean) * mask
        if self.mode == "center":
            return centred
        std = ops.sqrt(ops.sum(ops.square(centred), axis=1, keepdims=True) / count)
        return centred / (std + self.epsilon)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "epsilon": self.epsilon})
        return config
