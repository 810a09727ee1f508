"""Tests of relocalization in references of any length: windows, merging, files, the binary."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from small_model_spec import FEATURE_DIM

from video_reloc.relocalize import (
    load_features,
    parse_feature_range,
    relocalize,
    temporal_nms,
    window_starts,
)


def test_window_starts_cover_the_reference_and_end_at_its_end():
    assert window_starts(100) == [0]
    assert window_starts(300) == [0]
    assert window_starts(301) == [0, 1]
    assert window_starts(1000) == [0, 150, 300, 450, 600, 700]
    assert window_starts(900) == [0, 150, 300, 450, 600]
    for steps in (301, 777, 13_500):
        starts = window_starts(steps)
        assert starts[0] == 0 and starts[-1] == steps - 300
        assert all(0 < b - a <= 150 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError, match="stride"):
        window_starts(1000, 300, 301)


def test_temporal_nms():
    starts = np.array([10, 12, 50, 11, 80])
    ends = np.array([20, 22, 60, 21, 90])
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.1])
    assert temporal_nms(starts, ends, scores, 0.5).tolist() == [3, 2, 4]
    assert temporal_nms(starts, ends, scores, 0.5, top_k=2).tolist() == [3, 2]
    assert temporal_nms(starts, ends, scores, 0.95).tolist() == [3, 0, 1, 2, 4]


class Oracle:
    """A stand-in model that marks reference steps similar to the query's mean feature.

    Per step: start where a run of matching steps begins, end where it ends, inside within it.
    It records how many windows it was asked about, to check the cost is linear.
    """

    def __init__(self):
        self.rows = 0
        self.calls = 0

    def __call__(self, query, query_length, reference, reference_length):
        self.rows += len(reference)
        self.calls += 1
        target = query.mean(axis=1, keepdims=True)  # (B, 1, D)
        similarity = (reference * target).sum(-1) / (
            np.linalg.norm(reference, axis=-1) * np.linalg.norm(target, axis=-1) + 1e-9
        )
        match = similarity > 0.8  # (B, W)
        before = np.pad(match, [(0, 0), (1, 0)])[:, :-1]
        after = np.pad(match, [(0, 0), (0, 1)])[:, 1:]
        logits = np.stack(
            [4.0 * (match & ~before), 4.0 * (match & ~after), 4.0 * match, 4.0 * ~match], -1
        )
        probabilities = np.exp(logits)
        return (probabilities / probabilities.sum(-1, keepdims=True)).astype("float32")


def planted(steps: int, where: list[int], length: int = 20, seed: int = 0):
    """A query and a reference of noise holding the query's pattern at `where`."""
    rng = np.random.default_rng(seed)
    pattern = rng.standard_normal(FEATURE_DIM).astype("float32") * 3
    query = pattern + 0.1 * rng.standard_normal((10, FEATURE_DIM)).astype("float32")
    reference = rng.standard_normal((steps, FEATURE_DIM)).astype("float32")
    for start in where:
        reference[start : start + length] = pattern + 0.1 * rng.standard_normal(
            (length, FEATURE_DIM)
        )
    return query, reference


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_planted_segment_is_found(where):
    steps, length = 5000, 20
    start = {"start": 0, "middle": 2440, "end": steps - length}[where]
    query, reference = planted(steps, [start], length)
    oracle = Oracle()
    segments = relocalize((oracle, FEATURE_DIM), query, reference, top_k=3, seconds_per_feature=0.5)
    best = segments[0]
    assert (best.start, best.end) == (start, start + length)
    assert (best.start_seconds, best.end_seconds) == (start * 0.5, (start + length) * 0.5)
    assert best.score >= max(s.score for s in segments)
    assert oracle.rows == len(window_starts(steps))  # one row per window: linear cost


def test_several_planted_segments_come_back_in_the_top_k():
    where = [0, 1234, 2999 - 20]
    query, reference = planted(2999, where)
    segments = relocalize((Oracle(), FEATURE_DIM), query, reference, top_k=3, batch_size=4)
    assert sorted((s.start, s.end) for s in segments) == [(w, w + 20) for w in where]


def test_short_reference_is_one_window():
    query, reference = planted(40, [5], length=10)
    oracle = Oracle()
    segments = relocalize((oracle, FEATURE_DIM), query, reference, top_k=1)
    assert (segments[0].start, segments[0].end) == (5, 15)
    assert oracle.rows == 1


def test_bad_inputs_are_refused():
    query, reference = planted(100, [])
    with pytest.raises(ValueError, match="reference"):
        relocalize((Oracle(), FEATURE_DIM), query, reference[:, :5])
    reference[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        relocalize((Oracle(), FEATURE_DIM), query, reference)


@pytest.fixture(scope="module")
def model(small_model):
    return small_model


@pytest.fixture(scope="module")
def base_path(copy_small_export, tmp_path_factory):
    return copy_small_export(tmp_path_factory.mktemp("relocalize") / "reloc", 1)


def test_saved_model_and_keras_model_agree(model, base_path):
    rng = np.random.default_rng(3)
    query = rng.standard_normal((8, FEATURE_DIM)).astype("float32")
    reference = rng.standard_normal((700, FEATURE_DIM)).astype("float32")
    from_saved = relocalize(base_path, query, reference, top_k=4, candidates_per_window=4)
    from_keras = relocalize(model, query, reference, top_k=4, candidates_per_window=4)
    assert len(from_saved) == 4
    assert [(s.start, s.end) for s in from_saved] == [(s.start, s.end) for s in from_keras]
    np.testing.assert_allclose(
        [s.score for s in from_saved], [s.score for s in from_keras], rtol=1e-5
    )
    scores = [s.score for s in from_saved]
    assert scores == sorted(scores, reverse=True)
    for segment in from_saved:
        assert 0 <= segment.start < segment.end <= 700
        assert segment.end - segment.start <= 64
        np.testing.assert_allclose(segment.start_seconds, segment.start * 16 / 30)


def test_load_features(tmp_path):
    rows = np.arange(40 * FEATURE_DIM, dtype="float32").reshape(40, FEATURE_DIM)
    np.save(tmp_path / "video.npy", rows)
    with h5py.File(tmp_path / "features.hdf5", "w") as h5:
        h5.create_dataset("v_abc-_1/c3d_features", data=rows)
    np.testing.assert_array_equal(load_features(tmp_path / "video.npy"), rows)
    np.testing.assert_array_equal(load_features(f"{tmp_path}/features.hdf5:abc-_1"), rows[::2])
    np.testing.assert_array_equal(
        load_features(f"{tmp_path}/features.hdf5:v_abc-_1", subsample=1, feature_range=(3, 9)),
        rows[3:9],
    )
    with pytest.raises(KeyError, match="nope"):
        load_features(f"{tmp_path}/features.hdf5:nope")
    with pytest.raises(ValueError, match="name the video"):
        load_features(f"{tmp_path}/features.hdf5")
    assert parse_feature_range("3:9") == (3, 9)
    assert parse_feature_range(":9") == (None, 9)
    with pytest.raises(ValueError, match="START:END"):
        parse_feature_range("3-9")


@pytest.mark.slow
def test_relocalize_binary(base_path, tmp_path):
    query, reference = planted(900, [300])
    with h5py.File(tmp_path / "features.hdf5", "w") as h5:
        h5.create_dataset("v_q/c3d_features", data=np.repeat(query, 2, axis=0))
    np.save(tmp_path / "reference.npy", reference)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "video_reloc.cli.relocalize",
            f"--model={base_path}",
            f"--query={tmp_path}/features.hdf5:q",
            "--query_range=0:8",
            f"--reference={tmp_path}/reference.npy",
            "--top_k=3",
            "--fps=25",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    segments = json.loads(result.stdout)
    assert len(segments) == 3
    for segment in segments:
        assert set(segment) == {"start", "end", "score", "start_seconds", "end_seconds"}
        assert 0 <= segment["start"] < segment["end"] <= 900
        assert segment["end_seconds"] == pytest.approx(segment["end"] * 16 / 25)
