"""Localization layer, Eq. (8)."""

from __future__ import annotations

import keras
from keras import ops

from video_reloc.layers.initializers import clone_initializer
from video_reloc.layers.sequence_lstm import SequenceLSTM

OUTPUTS = ("logits", "log_probabilities", "probabilities")
NUM_CLASSES = 4  # start, end, inside, outside


@keras.saving.register_keras_serializable(package="video_reloc")
class LocalizerHead(keras.layers.Layer):
    """Localization, Eq. (8) of Feng et al. (ECCV 2018): an LSTM, then softmax(W^l h^l + b^l).

    Every reference step gets a distribution over four classes, in this order: starting point,
    ending point, inside, outside.

    Args:
        units: Hidden size of the localization LSTM (l = 128 in the paper).
        output_type: `"log_probabilities"` (default), `"probabilities"` or `"logits"`.
        kernel_initializer: Initializer of the input kernels.
        recurrent_initializer: Initializer of the recurrent kernel.
        bias_initializer: Initializer of the biases.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: Matching states h^m, shape `(B, Tr, d)`, or a sequence of parts whose
            concatenation on the last axis is h^m (such as the forward and backward states
            h^f and h^b of `AttentionMatching`): compiled with the layer, the concatenation
            costs no stage of its own.
        use_cudnn: The LSTM's path for this call (`SequenceLSTM`); `None` means its own.

    Returns:
        Tensor of shape `(B, Tr, 4)` holding `output_type`. The LSTM is causal, so steps past a
        sequence's valid length never change the valid steps.
    """

    def __init__(
        self,
        units: int = 128,
        output_type: str = "log_probabilities",
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        recurrent_initializer: str | keras.initializers.Initializer = "orthogonal",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if output_type not in OUTPUTS:
            raise ValueError(f"`output_type` must be one of {OUTPUTS}, got {output_type!r}.")
        self.units = units
        self.output_type = output_type
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self.lstm = SequenceLSTM(
            self.units,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            recurrent_initializer=clone_initializer(self.recurrent_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="lstm",
        )
        self.lstm.build(input_shape)
        self.classifier = keras.layers.Dense(
            NUM_CLASSES,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="classifier",
        )
        self.classifier.build((*input_shape[:-1], self.units))
        self.built = True

    def call(self, inputs, use_cudnn: str | bool | None = None):
        if isinstance(inputs, (list, tuple)):
            inputs = ops.concatenate(list(inputs), axis=-1)
        logits = self.classifier(self.lstm(inputs, use_cudnn=use_cudnn))
        if self.output_type == "log_probabilities":
            return ops.log_softmax(logits, axis=-1)
        if self.output_type == "probabilities":
            return ops.softmax(logits, axis=-1)
        return logits

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            input_shape = input_shape[0]  # parts: all but the last axis agree
        return (*input_shape[:-1], NUM_CLASSES)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "output_type": self.output_type,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
