"""The baselines of Table 1 of the paper (Sec. 5.1): chance, frame-level and video-level.

Every baseline is a `SegmentPredictor`: `predict(queries, references)` takes a list of query
feature arrays `(Tq_n, D)` and a list of reference feature arrays `(Tr_n, D)` (any lengths) and
returns `(N, 2)` int32 `[start, end)` segments in the references, so the same evaluation code
(`video_reloc.metrics.temporal_iou`) scores them all. `unpad` turns a padded batch
`(features (B, T, D), lengths (B,))` into such a list.

SST, the paper's action-proposal baseline, is out of scope: the benchmark quotes its figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from video_reloc.baselines.chance import ChanceBaseline
from video_reloc.baselines.frame_level import FrameLevelBaseline, frame_level_search
from video_reloc.baselines.video_level import VideoLevelBaseline, triplet_loss


@runtime_checkable
class SegmentPredictor(Protocol):
    """Anything that predicts one `[start, end)` segment of each reference for its query."""

    def predict(
        self, queries: Sequence[np.ndarray], references: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Predicts segments.

        Args:
            queries: N arrays of shape `(Tq_n, D)`.
            references: N arrays of shape `(Tr_n, D)`.

        Returns:
            `(N, 2)` int32 `[start, end)` in reference features.
        """
        ...


def unpad(features: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """Splits a padded batch into its valid rows.

    Args:
        features: `(B, T, D)` padded features.
        lengths: `(B,)` valid steps of each row.

    Returns:
        B arrays of shape `(lengths[b], D)`.
    """
    return [np.asarray(f[: int(n)]) for f, n in zip(features, lengths, strict=True)]


__all__ = [
    "ChanceBaseline",
    "FrameLevelBaseline",
    "SegmentPredictor",
    "VideoLevelBaseline",
    "frame_level_search",
    "triplet_loss",
    "unpad",
]
