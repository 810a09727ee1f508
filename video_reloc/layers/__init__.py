"""Keras layers of the re-localization models, one public layer per file."""

from video_reloc.layers.attention_matching import AttentionMatching
from video_reloc.layers.cross_gate import CrossGate
from video_reloc.layers.dilated_temporal_conv import DilatedTemporalConv
from video_reloc.layers.factorized_bilinear import FactorizedBilinear
from video_reloc.layers.feature_normalization import FeatureNormalization
from video_reloc.layers.localizer_head import LocalizerHead
from video_reloc.layers.matching_cell import MatchingCell
from video_reloc.layers.normalized_projection import NormalizedProjection
from video_reloc.layers.sequence_lstm import SequenceLSTM
from video_reloc.layers.similarity_attention import SimilarityAttention
from video_reloc.layers.similarity_map_encoder import SimilarityMapEncoder

__all__ = [
    "AttentionMatching",
    "CrossGate",
    "DilatedTemporalConv",
    "FactorizedBilinear",
    "FeatureNormalization",
    "LocalizerHead",
    "MatchingCell",
    "NormalizedProjection",
    "SequenceLSTM",
    "SimilarityAttention",
    "SimilarityMapEncoder",
]
