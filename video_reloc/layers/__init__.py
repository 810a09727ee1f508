"""Keras layers of the re-localization model, one public layer per file."""

from video_reloc.layers.attention_matching import AttentionMatching
from video_reloc.layers.cross_gate import CrossGate
from video_reloc.layers.factorized_bilinear import FactorizedBilinear
from video_reloc.layers.feature_normalization import FeatureNormalization
from video_reloc.layers.localizer_head import LocalizerHead
from video_reloc.layers.matching_cell import MatchingCell
from video_reloc.layers.sequence_lstm import SequenceLSTM

__all__ = [
    "AttentionMatching",
    "CrossGate",
    "FactorizedBilinear",
    "FeatureNormalization",
    "LocalizerHead",
    "MatchingCell",
    "SequenceLSTM",
]
