"""tIoU, accuracy at thresholds and the table formatter."""

import numpy as np
import pytest

from video_reloc.metrics import (
    PAPER_TABLE1,
    THRESHOLDS,
    accuracy_at_thresholds,
    format_table,
    temporal_iou,
)


def test_temporal_iou():
    iou = temporal_iou([[0, 10], [5, 15], [20, 30], [0, 4], [3, 3]], [[0, 10]] * 5)
    np.testing.assert_allclose(iou, [1.0, 5 / 15, 0.0, 0.4, 0.0])


def test_accuracy_is_strictly_above_threshold():
    result = accuracy_at_thresholds([0.5, 0.55, 0.95, 0.1])
    assert set(result) == {f"{t:g}" for t in THRESHOLDS} | {"mean", "mean_iou"}
    assert result["mean_iou"] == pytest.approx(100 * np.mean([0.5, 0.55, 0.95, 0.1]))
    assert result["0.5"] == pytest.approx(50.0)  # 0.5 itself is not above 0.5
    assert result["0.1"] == pytest.approx(75.0)
    assert result["0.9"] == pytest.approx(25.0)
    mean = np.mean([result[k] for k in ("0.5", "0.6", "0.7", "0.8", "0.9")])
    assert result["mean"] == pytest.approx(mean)
    with pytest.raises(ValueError):
        accuracy_at_thresholds([])


def test_paper_means_agree_with_rows():
    for name, row in PAPER_TABLE1.items():
        assert np.mean(row[:5]) == pytest.approx(row[5], abs=0.06), name


def test_format_table():
    result = accuracy_at_thresholds([0.95, 0.65])
    table = format_table({"Ours": result}, paper={"Ours": PAPER_TABLE1["Ours"]})
    lines = table.splitlines()
    assert lines[0].startswith("| mAP @1 | 0.5 | 0.6 | 0.7 | 0.8 | 0.9 | Average | mIoU | 0.1")
    assert lines[2] == (
        "| Ours | 100.0 | 100.0 | 50.0 | 50.0 | 50.0 | 70.0 | 80.0 "
        "| 100.0 | 100.0 | 100.0 | 100.0 |"
    )
    assert lines[3] == "| Ours (paper) | 43.5 | 35.1 | 27.3 | 16.2 | 6.5 | 25.7 |  |  |  |  |  |"
