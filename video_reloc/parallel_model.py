"""A re-localization model that matches every reference step against the query at once.

The paper's model (`video_reloc.model`) walks the reference step by step three times (encoder,
matching, localizer). This one has no loop over time: temporal convolutions give context,
every reference step attends over the query through a cosine similarity, and the similarity
map itself (the signal of frame-level matching) is read by a small CNN. It has the inputs and
outputs of `VideoRelocModel`, so the loss of Eqs. (9)-(11), the decoding of Eq. (12), the
export and every binary work with it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import ops

from video_reloc.layers import (
    CrossGate,
    DilatedTemporalConv,
    FactorizedBilinear,
    NormalizedProjection,
    SimilarityAttention,
    SimilarityMapEncoder,
)
from video_reloc.layers.localizer_head import NUM_CLASSES
from video_reloc.layers.normalized_projection import VIEWS

INPUT_KEYS = ("query", "query_length", "reference", "reference_length")
MATCHINGS = ("bilinear", "concat", "none")

# Switches of the model, as Table 2 switches the paper's: the rows of an ablation study.
PARALLEL_ABLATIONS = {
    "full": {"cross_gating": True, "matching": "bilinear", "similarity_map": True},
    "similarity_map_only": {"cross_gating": False, "matching": "none", "similarity_map": True},
    "no_similarity_map": {"cross_gating": True, "matching": "bilinear", "similarity_map": False},
    "base": {"cross_gating": False, "matching": "concat", "similarity_map": False},
    "base_cross_gating": {"cross_gating": True, "matching": "concat", "similarity_map": False},
    "base_bilinear": {"cross_gating": False, "matching": "bilinear", "similarity_map": False},
    "standardized_only": {"input_views": ("standardized",)},
    "scaled_only": {"input_views": ("scaled",)},
}


@keras.saving.register_keras_serializable(package="video_reloc")
class ParallelRelocModel(keras.Model):
    """Video re-localization with every reference step matched at once (no loop over time).

    - Input (for Eq. 1): `NormalizedProjection`, each sequence's features standardized over
      its own valid steps (as the normalized frame-level baseline does) and scaled by their
      RMS, projected side by side to `units`.
    - Encoder (for Eq. 1): `DilatedTemporalConv` blocks, shared by query and reference (as
      the paper shares its LSTM); dropout follows.
    - Attention (for Eq. 2): `SimilarityAttention`, each reference step over the query by
      cosine similarity, without the recurrent matching state.
    - Matching (Eqs. 3-5, each step at once): `CrossGate` and `FactorizedBilinear` on the
      attended query and the reference step (or their concatenation); dropout follows.
    - Similarity map: `SimilarityMapEncoder`, a 2-D CNN and row statistics of the map of
      cosine similarities between every reference and query step: the signal of frame-level
      matching, which carries over to unseen classes.
    - Aggregation and localization (for Eqs. 7-8): `DilatedTemporalConv` blocks over the
      reference (dilations 1, 3, 9, 27: each step sees the 81 steps around it, more than a
      whole segment of up to 64 features), then softmax(W h + b) over (start, end, inside,
      outside).

    Every stage is linear in the reference length (the map is `Tr x Tq`). Steps past a valid
    length never change a valid output: the projection and the convolutions zero padded
    steps, the attention and the map mask them.

    Args:
        units: Width l of the encoder, the attention keys and the matching.
        bilinear_rank: Rank k of the factorized bilinear matching.
        bilinear_units: Output width of the bilinear matching (`None`: `units`).
        cross_gating: Whether to use cross gating, Eq. (3).
        matching: `"bilinear"` (Eq. 5), `"concat"` (the attended query and the step side by
            side) or `"none"` (no vector matching: the similarity map alone).
        similarity_map: Whether to read the similarity map with `SimilarityMapEncoder`.
        input_views: The views of `NormalizedProjection`: `("standardized", "scaled")`, or
            one of them.
        map_channels: Filters of the similarity map's convolutions.
        map_convolutions: Number of the similarity map's 3 x 3 convolutions.
        encoder_dilations: Dilations of the encoder's blocks.
        aggregation_units: Width of the aggregation blocks.
        aggregation_dilations: Dilations of the aggregation blocks.
        encoder_dropout: Dropout rate after the encoder.
        matching_dropout: Dropout rate after the matching.
        **kwargs: Base model arguments.

    Call arguments:
        inputs: A dict with `query` `(B, Tq, D)` float32, `query_length` `(B,)` int32,
            `reference` `(B, Tr, D)` float32 and `reference_length` `(B,)` int32.
        training: Whether dropout is active.
        return_attention: Whether to add the attention map to the outputs.
        compile_stages: Run the whole model as one XLA computation (for a graph that is not
            itself compiled, such as the SavedModel's signature).

    Returns:
        A dict with `log_probabilities` `(B, Tr, 4)` and, with `return_attention`,
        `attention` `(B, Tr, Tq)`.
    """

    def __init__(
        self,
        units: int = 64,
        bilinear_rank: int = 8,
        bilinear_units: int | None = 16,
        cross_gating: bool = True,
        matching: str = "bilinear",
        similarity_map: bool = True,
        input_views: Sequence[str] = VIEWS,
        map_channels: int = 8,
        map_convolutions: int = 2,
        encoder_dilations: Sequence[int] = (1,),
        aggregation_units: int = 48,
        aggregation_dilations: Sequence[int] = (1, 3, 9, 27),
        encoder_dropout: float = 0.4,
        matching_dropout: float = 0.2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if matching not in MATCHINGS:
            raise ValueError(f"`matching` must be one of {MATCHINGS}, got {matching!r}.")
        if matching == "none" and not similarity_map:
            raise ValueError("With matching='none' the similarity map is the only signal.")
        self.units = units
        self.bilinear_rank = bilinear_rank
        self.bilinear_units = bilinear_units
        self.cross_gating = cross_gating
        self.matching = matching
        self.similarity_map = similarity_map
        self.input_views = [str(v) for v in input_views]
        self.map_channels = map_channels
        self.map_convolutions = map_convolutions
        self.encoder_dilations = [int(d) for d in encoder_dilations]
        self.aggregation_units = aggregation_units
        self.aggregation_dilations = [int(d) for d in aggregation_dilations]
        self.encoder_dropout = encoder_dropout
        self.matching_dropout = matching_dropout

    def build(self, input_shape):
        feature_dim = input_shape["reference"][-1]
        if input_shape["query"][-1] != feature_dim:
            raise ValueError(
                "query and reference features must have the same dimension; got "
                f"{input_shape['query'][-1]} and {feature_dim}."
            )
        self.feature_dim = int(feature_dim)
        units = self.units
        self.projection = NormalizedProjection(units, self.input_views, name="projection")
        self.projection.build((None, None, feature_dim))
        self.encoder = DilatedTemporalConv(units, self.encoder_dilations, name="encoder")
        self.encoder.build((None, None, units))
        self.encoder_dropout_layer = keras.layers.Dropout(
            self.encoder_dropout, name="encoder_dropout"
        )
        self.attention = SimilarityAttention(units, name="attention")
        self.attention.build((None, None, units), (None, None, units))
        matched_dim = 0
        self.cross_gate = self.bilinear = None
        if self.matching != "none":
            if self.cross_gating:
                self.cross_gate = CrossGate(name="cross_gate")
                self.cross_gate.build(((None, None, units), (None, None, units)))
            if self.matching == "bilinear":
                self.bilinear = FactorizedBilinear(
                    self.bilinear_units, self.bilinear_rank, name="bilinear"
                )
                self.bilinear.build(((None, None, units), (None, None, units)))
                matched_dim = self.bilinear_units or units
            else:
                matched_dim = 2 * units
        self.matching_dropout_layer = keras.layers.Dropout(
            self.matching_dropout, name="matching_dropout"
        )
        self.map_encoder = None
        if self.similarity_map:
            self.map_encoder = SimilarityMapEncoder(
                self.map_channels, self.map_convolutions, name="similarity_map"
            )
            self.map_encoder.build((None, None, None))
            matched_dim += self.map_encoder.output_dim
        self.aggregation = DilatedTemporalConv(
            self.aggregation_units, self.aggregation_dilations, name="aggregation"
        )
        self.aggregation.build((None, None, matched_dim))
        self.classifier = keras.layers.Dense(NUM_CLASSES, name="classifier")
        self.classifier.build((None, None, self.aggregation_units))
        self.built = True

    def call(self, inputs, training=False, return_attention=False, compile_stages=False):
        missing = [key for key in INPUT_KEYS if key not in inputs]
        if missing:
            raise KeyError(f"ParallelRelocModel inputs lack {missing}; expected keys {INPUT_KEYS}.")
        args = [inputs[key] for key in INPUT_KEYS]
        if compile_stages:
            forward = tf.function(
                lambda *a: self._forward(*a, training=training),
                jit_compile=True,
                autograph=False,
            )
            log_probabilities, attention = forward(*args)
        else:
            log_probabilities, attention = self._forward(*args, training=training)
        outputs = {"log_probabilities": log_probabilities}
        if return_attention:
            outputs["attention"] = attention
        return outputs

    def encode(self, features, lengths, training=False):
        """The encoder, shared by query and reference: `(B, T, D)` to `(B, T, units)`."""
        encoded = self.encoder(
            self.projection(features, lengths=lengths), lengths=lengths, training=training
        )
        return self.encoder_dropout_layer(encoded, training=training)

    def _forward(self, query, query_length, reference, reference_length, training=False):
        """The whole model: `(log_probabilities (B, Tr, 4), attention (B, Tr, Tq))`."""
        h_query = self.encode(query, query_length, training=training)
        h_reference = self.encode(reference, reference_length, training=training)
        attended, similarity, attention = self.attention(
            h_query, h_reference, query_length, reference_length
        )
        parts = []
        if self.matching != "none":
            gated_query, gated_reference = attended, h_reference
            if self.cross_gate is not None:
                gated_query, gated_reference = self.cross_gate((attended, h_reference))
            if self.bilinear is not None:
                matched = self.bilinear((gated_query, gated_reference))
            else:
                matched = ops.concatenate([gated_query, gated_reference], axis=-1)
            parts.append(self.matching_dropout_layer(matched, training=training))
        if self.map_encoder is not None:
            parts.append(self.map_encoder(similarity, attention, query_length, reference_length))
        matched = ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        aggregated = self.aggregation(matched, lengths=reference_length, training=training)
        return ops.log_softmax(self.classifier(aggregated), axis=-1), attention

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "bilinear_rank": self.bilinear_rank,
                "bilinear_units": self.bilinear_units,
                "cross_gating": self.cross_gating,
                "matching": self.matching,
                "similarity_map": self.similarity_map,
                "input_views": list(self.input_views),
                "map_channels": self.map_channels,
                "map_convolutions": self.map_convolutions,
                "encoder_dilations": list(self.encoder_dilations),
                "aggregation_units": self.aggregation_units,
                "aggregation_dilations": list(self.aggregation_dilations),
                "encoder_dropout": self.encoder_dropout,
                "matching_dropout": self.matching_dropout,
            }
        )
        return config


def build_parallel_model(
    feature_dim: int,
    ablation: str = "full",
    seed: int | None = None,
    normalization: str | None = None,
    **kwargs,
) -> ParallelRelocModel:
    """Makes and builds a `ParallelRelocModel` for features of size `feature_dim`.

    Args:
        feature_dim: D, the size of one feature vector.
        ablation: A key of `PARALLEL_ABLATIONS`.
        seed: If given, seeds Keras' random generators before the weights are made.
        normalization: Must be `None`: the training field (`--normalization`) that puts a
            `FeatureNormalization` before the paper's model; this model normalizes its inputs
            itself (`NormalizedProjection`).
        **kwargs: Other `ParallelRelocModel` arguments (`units`, `bilinear_rank`, ...).

    Returns:
        A built model.
    """
    if normalization is not None:
        raise ValueError(
            f"normalization={normalization!r} applies to the paper's model (architecture cgbm); "
            "the parallel model normalizes its inputs itself (input_views)."
        )
    if ablation not in PARALLEL_ABLATIONS:
        raise ValueError(
            f"Unknown ablation {ablation!r} of the parallel model; choose one of "
            f"{sorted(PARALLEL_ABLATIONS)}."
        )
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = ParallelRelocModel(**{**PARALLEL_ABLATIONS[ablation], **kwargs})
    model.build(
        {
            "query": (None, None, feature_dim),
            "query_length": (None,),
            "reference": (None, None, feature_dim),
            "reference_length": (None,),
        }
    )
    return model
