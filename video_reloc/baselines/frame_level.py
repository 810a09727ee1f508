"""The frame-level baseline of Table 1 (paper Sec. 5.1, after Chou et al., TMM 2015).

No training: the query and reference features are L2-normalised, a distance table
`D_ij = ||q_i - r_j||_2` is formed, and dynamic programming finds the "diagonal block" of
least mean distance: a monotone path through the table that covers every query row. Besides
diagonal moves it may take horizontal moves (the reference advances, the query stays: the
output grows) and vertical moves (the query advances, the reference stays: the output
shrinks), so the output length can differ from the query's. The output is the span of
reference columns the path covers.

`FrameLevelBaseline(normalization="standardize")` is the baseline a practitioner would try
first: every video's features (the query's, the reference's) are standardized before matching,
each dimension to zero mean and unit variance over the video's own rows (`standardize`), which
takes away what a whole video shares (its scene) and evens out the dimensions' scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from video_reloc.padding import stack_padded

_EPS = 1e-12
NORMALIZATIONS = (None, "standardize")


def standardize(features: np.ndarray, epsilon: float = 1e-6) -> np.ndarray:
    """Each dimension of one video's features to zero mean and unit variance over its rows.

    Args:
        features: `(T, D)` rows of one video (a query or a reference).
        epsilon: Added to the standard deviation.

    Returns:
        `(T, D)` float64.
    """
    x = np.asarray(features, np.float64)
    return (x - x.mean(0)) / (x.std(0) + epsilon)


def distance_table(
    query: np.ndarray, query_length: np.ndarray, reference: np.ndarray, reference_length: np.ndarray
) -> np.ndarray:
    """Euclidean distances of L2-normalised features, `inf` at padding.

    Args:
        query: `(B, Tq, D)` query features.
        query_length: `(B,)` valid query rows.
        reference: `(B, Tr, D)` reference features.
        reference_length: `(B,)` valid reference rows.

    Returns:
        `(B, Tq, Tr)` float64 table `D_ij = ||q_i / |q_i| - r_j / |r_j| ||_2`.
    """
    q = query / np.maximum(np.linalg.norm(query, axis=-1, keepdims=True), _EPS)
    r = reference / np.maximum(np.linalg.norm(reference, axis=-1, keepdims=True), _EPS)
    squared = (q**2).sum(-1)[:, :, None] + (r**2).sum(-1)[:, None, :] - 2 * q @ r.transpose(0, 2, 1)
    table = np.sqrt(np.maximum(squared, 0.0))
    valid = (np.arange(q.shape[1])[None, :, None] < query_length[:, None, None]) & (
        np.arange(r.shape[1])[None, None, :] < reference_length[:, None, None]
    )
    return np.where(valid, table, np.inf)


def _min_sum_paths(
    cost: np.ndarray, query_length: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The least-cost constrained path of every table (one pass over the query rows).

    Args:
        cost: `(B, Tq, Tr)` cell costs (`inf` where forbidden).
        query_length: `(B,)` valid query rows (each at least 1).

    Returns:
        `(total, start, end, cells)`, each `(B,)`: the path's summed cost, its first and last
        reference column, and its number of cells.
    """
    batch, steps, width = cost.shape
    columns = np.broadcast_to(np.arange(width), (batch, width))
    inf = np.full((batch, 1), np.inf)

    def shift(a: np.ndarray, fill) -> np.ndarray:  # a[:, j - 1] at column j
        return np.concatenate([np.broadcast_to(fill, (batch, 1)).astype(a.dtype), a[:, :-1]], 1)

    def best(states):  # elementwise argmin over (cost, start, cells) triples
        costs = np.stack([s[0] for s in states])
        pick = np.argmin(costs, axis=0)[None]
        return tuple(
            np.take_along_axis(np.stack([s[k] for s in states]), pick, 0)[0] for k in range(3)
        )

    final_total = np.full(batch, np.inf)
    final_start, final_end, final_cells = (np.zeros(batch, np.int64) for _ in range(3))
    diagonal = horizontal = vertical = None
    for i in range(steps):
        c = cost[:, i]
        if i == 0:  # a path starts at any column of the first row
            diagonal = (c, columns.astype(np.int64), np.ones((batch, width), np.int64))
            vertical = (np.full((batch, width), np.inf), columns, diagonal[2])
        else:
            previous = best([diagonal, horizontal, vertical])
            new_diagonal = (
                shift(previous[0], inf) + c,
                shift(previous[1], 0),
                shift(previous[2], 0) + 1,
            )
            vertical = (diagonal[0] + c, diagonal[1], diagonal[2] + 1)
            diagonal = new_diagonal
        horizontal = (shift(diagonal[0], inf) + c, shift(diagonal[1], 0), shift(diagonal[2], 0) + 1)
        done = np.flatnonzero(query_length - 1 == i)  # pairs whose last query row is i
        if done.size:
            total, start, cells = best([diagonal, horizontal, vertical])
            end = np.argmin(total[done], axis=1)
            final_total[done] = total[done, end]
            final_start[done] = start[done, end]
            final_end[done] = end
            final_cells[done] = cells[done, end]
    return final_total, final_start, final_end, final_cells


def frame_level_search(
    query: np.ndarray,
    query_length: np.ndarray,
    reference: np.ndarray,
    reference_length: np.ndarray,
    max_iterations: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """The path of least mean distance through each distance table (Chou et al.'s blocks).

    A path visits cells `(i, j)` of the `(Tq, Tr)` table `D`, starting at any column of row 0
    and ending at any column of row `Tq - 1`. Its moves into a cell are diagonal
    `(i-1, j-1) -> (i, j)`, horizontal `(i, j-1) -> (i, j)` and vertical `(i-1, j) -> (i, j)`;
    a horizontal or vertical move must follow a diagonal move (or the start), which bounds the
    slope to [1/2, 2]: the output spans between `ceil(Tq / 2)` and `2 Tq` reference features.
    The path minimises its mean cell distance `sum_P D / |P|`.

    The ratio is minimised exactly by Dinkelbach's method: for a per-pair `lambda` (first 0),
    with `c = D - lambda`, one pass over the query rows computes, for the three ways of
    entering a cell (G: diagonal or start, H: horizontal, V: vertical),

        G[0, j] = c[0, j];                      V[0, j] = inf
        G[i, j] = c[i, j] + min(G, H, V)[i-1, j-1]
        V[i, j] = c[i, j] + G[i-1, j]
        H[i, j] = c[i, j] + G[i, j-1]

    carrying along each state's first column and cell count (so no back-tracking table is
    needed); the best path ends at `argmin_j min(G, H, V)[Tq-1, j]`. Then `lambda` becomes that
    path's mean distance, and the pass repeats until `lambda` stops decreasing: the last path
    has the least mean distance of all paths. Every pass is vectorised over the batch and the
    reference axis; only the query rows are a Python loop. A reference shorter than
    `ceil(Tq / 2)` admits no path: its output is the whole reference (mean distance `inf`).

    Args:
        query: `(B, Tq, D)` query features.
        query_length: `(B,)` valid query rows, each at least 1.
        reference: `(B, Tr, D)` reference features.
        reference_length: `(B,)` valid reference rows, each at least 1.
        max_iterations: The most Dinkelbach passes.

    Returns:
        `(segments, mean_distance)`: `(B, 2)` int32 `[start, end)` and `(B,)` float64.
    """
    query_length = np.asarray(query_length, np.int64)
    reference_length = np.asarray(reference_length, np.int64)
    table = distance_table(
        np.asarray(query, np.float64),
        query_length,
        np.asarray(reference, np.float64),
        reference_length,
    )
    total, start, end, cells = _min_sum_paths(table, query_length)
    found = np.isfinite(total)  # False only where the reference is too short for any path
    ratio = np.where(found, total / cells, 0.0)
    for _ in range(max_iterations):
        total, new_start, new_end, cells = _min_sum_paths(
            table - ratio[:, None, None], query_length
        )
        new_ratio = (total + ratio * cells) / cells
        improved = found & (new_ratio < ratio - 1e-12)
        if not improved.any():
            break
        start = np.where(improved, new_start, start)
        end = np.where(improved, new_end, end)
        ratio = np.where(improved, new_ratio, ratio)
    start = np.where(found, start, 0)
    end = np.where(found, end, reference_length - 1)
    ratio = np.where(found, ratio, np.inf)
    segments = np.stack([start, end + 1], axis=1).astype(np.int32)
    return segments, ratio


class FrameLevelBaseline:
    """The frame-level baseline: `frame_level_search` on every pair, in padded chunks.

    Args:
        batch_size: Pairs per vectorised chunk.
        normalization: `None` (the paper's baseline, raw features) or `"standardize"` (every
            query and reference standardized on its own rows first, `standardize`).
    """

    def __init__(self, batch_size: int = 64, normalization: str | None = None):
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}."
            )
        self.batch_size = batch_size
        self.normalization = normalization

    def predict(
        self, queries: Sequence[np.ndarray], references: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Predicts the block of least mean distance in each reference.

        Args:
            queries: N arrays `(Tq_n, D)`.
            references: N arrays `(Tr_n, D)`.

        Returns:
            `(N, 2)` int32 `[start, end)`.
        """
        if self.normalization == "standardize":
            queries = [standardize(q) for q in queries]
            references = [standardize(r) for r in references]
        out = np.zeros((len(queries), 2), np.int32)
        for lo in range(0, len(queries), self.batch_size):
            hi = lo + self.batch_size
            query, query_length = stack_padded(queries[lo:hi], dtype=np.float64)
            reference, reference_length = stack_padded(references[lo:hi], dtype=np.float64)
            out[lo:hi] = frame_level_search(query, query_length, reference, reference_length)[0]
        return out
