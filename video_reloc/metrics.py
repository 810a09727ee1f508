"""tIoU, top-1 accuracy at tIoU thresholds (the paper's "mAP"), and the paper's tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MEAN_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
# Table 1 and Table 2 of the paper (percent, tIoU 0.5 ... 0.9, then the mean).
PAPER_TABLE1 = {
    "Chance": (16.2, 11.0, 5.4, 2.9, 1.2, 7.3),
    "Frame-level baseline": (18.8, 13.9, 9.6, 5.0, 2.3, 9.9),
    "Video-level baseline": (24.3, 17.4, 12.0, 5.9, 2.2, 12.4),
    "SST": (33.2, 24.7, 17.2, 7.8, 2.7, 17.1),
    "Ours": (43.5, 35.1, 27.3, 16.2, 6.5, 25.7),
}
PAPER_TABLE2 = {
    "Base": (40.8, 32.4, 22.8, 15.9, 6.4, 23.7),
    "Base + cross gating": (40.5, 33.5, 25.1, 16.2, 6.1, 24.3),
    "Base + bilinear": (42.3, 34.9, 25.7, 15.4, 6.5, 25.0),
    "Ours": (43.5, 35.1, 27.3, 16.2, 6.5, 25.7),
}


def temporal_iou(predicted: np.ndarray, groundtruth: np.ndarray) -> np.ndarray:
    """tIoU of [start, end) segments.

    Args:
        predicted: `(N, 2)` [start, end) segments.
        groundtruth: `(N, 2)` [start, end) segments.

    Returns:
        `(N,)` float64 intersection over union; 0 where the union is empty.
    """
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1, 2)
    groundtruth = np.asarray(groundtruth, dtype=np.float64).reshape(-1, 2)
    inter = np.maximum(
        np.minimum(predicted[:, 1], groundtruth[:, 1])
        - np.maximum(predicted[:, 0], groundtruth[:, 0]),
        0.0,
    )
    union = (predicted[:, 1] - predicted[:, 0]) + (groundtruth[:, 1] - groundtruth[:, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def accuracy_at_thresholds(
    iou: Sequence[float] | np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> dict[str, float]:
    """Top-1 accuracy: the percentage of pairs whose tIoU is above each threshold; and mIoU.

    The paper's figure is `mean`, the accuracy averaged over tIoU 0.5 ... 0.9. Later work on
    the benchmark (GDP, AAAI 2020; FFI+SRM, TMM 2023; MATR, ICCV 2025) reports R@1 at tIoU 0.5
    (here `"0.5"`) and the mean tIoU (`mean_iou`).

    Args:
        iou: `(N,)` tIoU of each pair's top-1 prediction.
        thresholds: The tIoU thresholds.

    Returns:
        `{"0.1": ..., ..., "0.9": ..., "mean": ..., "mean_iou": ...}` in percent, `mean` over
        tIoU 0.5 ... 0.9, `mean_iou` the mean tIoU over all pairs.
    """
    iou = np.asarray(iou, dtype=np.float64)
    if iou.size == 0:
        raise ValueError("accuracy_at_thresholds needs at least one pair.")
    result = {f"{t:g}": float(100.0 * np.mean(iou > t)) for t in thresholds}
    result["mean"] = float(np.mean([100.0 * np.mean(iou > t) for t in MEAN_THRESHOLDS]))
    result["mean_iou"] = float(100.0 * np.mean(iou))
    return result


def format_table(
    rows: Mapping[str, Mapping[str, float]],
    paper: Mapping[str, Sequence[float]] | None = None,
    title: str = "mAP @1",
    extra_thresholds: bool = True,
) -> str:
    """Formats results as the paper's tables (Markdown): tIoU 0.5 ... 0.9, their mean, mIoU.

    Args:
        rows: Row name to a result of `accuracy_at_thresholds`.
        paper: Optional row name to the paper's six figures, printed as "(paper)" rows.
        title: The header of the first column.
        extra_thresholds: Whether to add the tIoU 0.1 ... 0.4 columns after the mean (and
            after mIoU, a column of its own when every row has `mean_iou`).

    Returns:
        A Markdown table.
    """
    columns = [f"{t:g}" for t in MEAN_THRESHOLDS] + ["mean"]
    extra = [f"{t:g}" for t in THRESHOLDS if t < 0.5] if extra_thresholds else []
    if all("mean_iou" in result for result in rows.values()):
        extra = ["mean_iou", *extra]
    names = {"mean": "Average", "mean_iou": "mIoU"}
    header = [title, *[names.get(c, c) for c in columns + extra]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in rows.items():
        cells = [f"{result[c]:.1f}" for c in columns + extra]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    for name, figures in (paper or {}).items():
        cells = [f"{v:.1f}" for v in figures] + [""] * len(extra)
        lines.append("| " + " | ".join([f"{name} (paper)", *cells]) + " |")
    return "\n".join(lines)
