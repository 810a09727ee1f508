"""The chance baseline of Table 1: a uniformly random segment of the reference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from video_reloc.decode import MAX_SEGMENT_LENGTH


class ChanceBaseline:
    """Predicts a segment drawn uniformly from all segments of at most 64 features.

    For a reference of `L` features and `W = min(max_segment_length, L)`, every segment
    `[s, e)` with `1 <= e - s <= W` and `0 <= s`, `e <= L` is equally likely: the length
    `d = e - s` is drawn with probability proportional to `L - d + 1` (the number of segments
    of that length), then the start uniformly from the `L - d + 1` places. (Uniform over
    segments, not over lengths: this is "a random guess among the decoder's outputs".)

    The draws come from `numpy.random.default_rng(seed)`, made anew at every `predict` call, so
    the same inputs always give the same segments.

    Args:
        seed: Seed of the generator.
        max_segment_length: The longest segment, in features (64, as Eq. 12's decoding).
    """

    def __init__(self, seed: int = 0, max_segment_length: int = MAX_SEGMENT_LENGTH):
        self.seed = seed
        self.max_segment_length = max_segment_length

    def sample(self, reference_lengths: Sequence[int] | np.ndarray) -> np.ndarray:
        """Draws one segment per reference length.

        Args:
            reference_lengths: `(N,)` reference lengths, each at least 1.

        Returns:
            `(N, 2)` int32 `[start, end)`.
        """
        lengths = np.asarray(reference_lengths, dtype=np.int64).reshape(-1)
        if lengths.size and lengths.min() < 1:
            raise ValueError("every reference needs at least one feature.")
        rng = np.random.default_rng(self.seed)
        widths = np.minimum(lengths, self.max_segment_length)
        d = np.arange(1, self.max_segment_length + 1)  # (W,) candidate lengths
        counts = np.where(d[None] <= widths[:, None], lengths[:, None] - d[None] + 1, 0)
        cdf = np.cumsum(counts, axis=1)  # (N, W)
        pick = rng.random(lengths.size) * cdf[:, -1]  # uniform over all segments of each pair
        length = 1 + (cdf <= pick[:, None]).sum(axis=1)
        start = np.floor(rng.random(lengths.size) * (lengths - length + 1)).astype(np.int64)
        return np.stack([start, start + length], axis=1).astype(np.int32)

    def predict(
        self, queries: Sequence[np.ndarray], references: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Random segments of the references; the queries are ignored.

        Args:
            queries: N arrays `(Tq_n, D)` (unused).
            references: N arrays `(Tr_n, D)`.

        Returns:
            `(N, 2)` int32 `[start, end)`.
        """
        del queries
        return self.sample([len(r) for r in references])
