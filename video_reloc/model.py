"""The video re-localization model of Feng et al. (ECCV 2018), Fig. 2."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from video_reloc.layers import (
    AttentionMatching,
    FeatureNormalization,
    LocalizerHead,
    SequenceLSTM,
)
from video_reloc.layers.sequence_ops import compiled_stage

INPUT_KEYS = ("query", "query_length", "reference", "reference_length")

# The model variants of Table 2 of the paper, as switches of one model.
ABLATIONS = {
    "base": {"cross_gating": False, "matching": "concat"},
    "base_cross_gating": {"cross_gating": True, "matching": "concat"},
    "base_bilinear": {"cross_gating": False, "matching": "bilinear"},
    "full": {"cross_gating": True, "matching": "bilinear"},
}


@keras.saving.register_keras_serializable(package="video_reloc")
class VideoRelocModel(keras.Model):
    """Cross gated bilinear matching model for video re-localization.

    - Optionally (not in the paper), `FeatureNormalization` of the query and the reference,
      each over its own valid steps, before the encoder.
    - Eq. (1): one LSTM, shared by query and reference, encodes the features; dropout follows
      (the original release keeps 0.6 of the units).
    - Eqs. (2)-(7): `AttentionMatching`, forward and backward, concatenated into h^m; dropout
      follows (keeps 0.8).
    - Eq. (8): `LocalizerHead`, per-step log-probabilities of start, end, inside, outside.

    Padding is never read by a valid step: the LSTMs are causal, the backward matching reverses
    within the valid length, and the attention softmax masks query steps past `query_length`.

    A caller that compiles a whole training step with XLA sets `model.jit_compile = True`
    first (Keras' `fit` follows the same attribute): the model then runs the paths that
    compile as part of a larger computation (see `_paths`).

    Args:
        units: Hidden size l of every LSTM (128).
        bilinear_rank: Rank k of the factorized bilinear matching (8).
        cross_gating: Whether to use cross gating, Eq. (3) (Table 2 ablation switch).
        matching: `"bilinear"` (Eq. 5) or `"concat"` (Table 2 ablation switch).
        encoder_dropout: Dropout rate after the encoder (0.4, i.e. keep 0.6).
        matching_dropout: Dropout rate after the matching (0.2, i.e. keep 0.8).
        normalization: `None` (the paper), or a `FeatureNormalization` mode (`"standardize"`,
            `"center"`) applied to each query and reference before the encoder.
        **kwargs: Base model arguments.

    Call arguments:
        inputs: A dict with `query` `(B, Tq, D)` float32, `query_length` `(B,)` int32,
            `reference` `(B, Tr, D)` float32 and `reference_length` `(B,)` int32.
        training: Whether dropout is active. A training call that is not compiled with XLA
            as a whole runs the matching's `"fused"` path (each step an XLA computation).
        return_attention: Whether to add the forward attention map to the outputs.
        compile_stages: For inference from a graph that is not itself compiled with XLA (the
            SavedModel's signature): run the encoder (once for the query, and for the
            reference its projection, then its loop), each matching direction (the matching's
            `"staged"` path) and the localizer as XLA computations of their own. TensorFlow
            then runs the independent ones at once, in particular the two matching loops, one
            per core, each with its weights in its core's cache. The localizer's computation
            concatenates the two directions' states.

    Returns:
        A dict with `log_probabilities` of shape `(B, Tr, 4)` and, with `return_attention`,
        `attention` of shape `(B, Tr, Tq)`.
    """

    def __init__(
        self,
        units: int = 128,
        bilinear_rank: int = 8,
        cross_gating: bool = True,
        matching: str = "bilinear",
        encoder_dropout: float = 0.4,
        matching_dropout: float = 0.2,
        normalization: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = units
        self.bilinear_rank = bilinear_rank
        self.cross_gating = cross_gating
        self.matching = matching
        self.encoder_dropout = encoder_dropout
        self.matching_dropout = matching_dropout
        self.normalization = normalization
        self.feature_normalization = (
            FeatureNormalization(normalization, name="feature_normalization")
            if normalization
            else None
        )
        self.encoder = SequenceLSTM(units, name="encoder")
        self.encoder_dropout_layer = keras.layers.Dropout(encoder_dropout, name="encoder_dropout")
        self.matching_layer = AttentionMatching(
            units=units,
            cross_gating=cross_gating,
            matching=matching,
            bilinear_rank=bilinear_rank,
            name="matching",
        )
        self.matching_dropout_layer = keras.layers.Dropout(
            matching_dropout, name="matching_dropout"
        )
        self.localizer = LocalizerHead(units=units, name="localizer")

    def build(self, input_shape):
        feature_dim = input_shape["reference"][-1]
        if input_shape["query"][-1] != feature_dim:
            raise ValueError(
                "query and reference features must have the same dimension; got "
                f"{input_shape['query'][-1]} and {feature_dim}."
            )
        self.encoder.build((None, None, feature_dim))
        self.matching_layer.build((None, None, self.units), (None, None, self.units))
        self.localizer.build((None, None, 2 * self.units))
        self.built = True

    def call(self, inputs, training=False, return_attention=False, compile_stages=False):
        missing = [key for key in INPUT_KEYS if key not in inputs]
        if missing:
            raise KeyError(f"VideoRelocModel inputs lack {missing}; expected keys {INPUT_KEYS}.")
        matching, use_cudnn = self._paths(training, compile_stages)
        query, reference = inputs["query"], inputs["reference"]
        if self.feature_normalization is not None:
            query = self.feature_normalization(query, inputs["query_length"])
            reference = self.feature_normalization(reference, inputs["reference_length"])
        if compile_stages:
            query, reference = self._encode_staged(query, reference)
        else:
            query = self.encoder(query, use_cudnn=use_cudnn)
            reference = self.encoder(reference, use_cudnn=use_cudnn)
        query = self.encoder_dropout_layer(query, training=training)
        reference = self.encoder_dropout_layer(reference, training=training)
        matched = self.matching_layer(
            query,
            reference,
            query_length=inputs["query_length"],
            reference_length=inputs["reference_length"],
            return_attention=return_attention,
            implementation=matching,
        )
        outputs = {}
        if return_attention:
            matched, outputs["attention"] = matched
        if compile_stages:
            # h^f and h^b apart: the localizer's computation concatenates them into h^m.
            matched = [self.matching_dropout_layer(m, training=training) for m in matched]
            outputs["log_probabilities"] = compiled_stage(
                lambda parts: self.localizer(parts, use_cudnn=False), self.localizer.name
            )(matched)
        else:
            matched = ops.concatenate(list(matched), axis=-1)  # h^m
            matched = self.matching_dropout_layer(matched, training=training)
            outputs["log_probabilities"] = self.localizer(matched, use_cudnn=use_cudnn)
        return outputs

    def _paths(self, training, compile_stages) -> tuple[str, bool | None]:
        """The matching's `implementation` and the LSTMs' `use_cudnn` for one call.

        - `compile_stages`: the matching's `"staged"` path; no cuDNN, which XLA cannot compile.
        - `self.jit_compile`, which says that the caller compiles the whole call with XLA
          (Keras' `fit` does when it is True; a custom loop that does sets it): the
          `"hoisted"` matching, which XLA fuses as a whole, and no cuDNN.
        - Otherwise, in training, the `"fused"` matching; else the `"hoisted"` one. The
          LSTMs take their own path: cuDNN's where a GPU is present.
        """
        if compile_stages:
            return "staged", False
        if self.jit_compile:
            return "hoisted", False
        return ("fused" if training else "hoisted"), None

    def _encode_staged(self, query, reference):
        """Eq. (1) as XLA computations: the query's; the reference's projection, then its loop.

        The reference's input projection, the largest matmul of inference, runs before the
        query's encoder starts, so that it has both cores; the query's encoder then runs beside
        the reference's loop.

        Args:
            query: `(B, Tq, D)` features.
            reference: `(B, Tr, D)` features.

        Returns:
            The encodings h^q `(B, Tq, l)` and h^r `(B, Tr, l)`.
        """
        encoder = self.encoder
        projected = compiled_stage(encoder.project, f"{encoder.name}_projection")(reference)
        with tf.control_dependencies([projected]):
            query = tf.identity(query)
        query = compiled_stage(lambda x: encoder(x, use_cudnn=False), encoder.name)(query)
        return query, compiled_stage(encoder.recur, f"{encoder.name}_recurrence")(projected)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "bilinear_rank": self.bilinear_rank,
                "cross_gating": self.cross_gating,
                "matching": self.matching,
                "encoder_dropout": self.encoder_dropout,
                "matching_dropout": self.matching_dropout,
                "normalization": self.normalization,
            }
        )
        return config


def build_model(
    feature_dim: int,
    ablation: str = "full",
    units: int = 128,
    bilinear_rank: int = 8,
    encoder_dropout: float = 0.4,
    matching_dropout: float = 0.2,
    normalization: str | None = None,
    seed: int | None = None,
) -> VideoRelocModel:
    """Makes and builds a `VideoRelocModel` for features of size `feature_dim`.

    Args:
        feature_dim: D, the size of one feature vector.
        ablation: A key of `ABLATIONS`: `full`, `base`, `base_cross_gating`, `base_bilinear`.
        units: Hidden size l.
        bilinear_rank: Rank k.
        encoder_dropout: Dropout rate after the encoder.
        matching_dropout: Dropout rate after the matching.
        normalization: `None`, or a `FeatureNormalization` mode before the encoder.
        seed: If given, seeds Keras' random generators before the weights are made.

    Returns:
        A built model.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"Unknown ablation {ablation!r}; choose one of {sorted(ABLATIONS)}.")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = VideoRelocModel(
        units=units,
        bilinear_rank=bilinear_rank,
        encoder_dropout=encoder_dropout,
        matching_dropout=matching_dropout,
        normalization=normalization,
        **ABLATIONS[ablation],
    )
    model.build(
        {
            "query": (None, None, feature_dim),
            "query_length": (None,),
            "reference": (None, None, feature_dim),
            "reference_length": (None,),
        }
    )
    return model
