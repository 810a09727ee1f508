"""Tests of the baselines of Table 1: chance, frame-level and video-level."""

import itertools

import numpy as np
import pytest

from video_reloc.baselines import (
    ChanceBaseline,
    FrameLevelBaseline,
    SegmentPredictor,
    VideoLevelBaseline,
    frame_level_search,
    unpad,
)
from video_reloc.baselines.frame_level import distance_table, standardize
from video_reloc.baselines.video_level import all_windows
from video_reloc.metrics import temporal_iou

DIM = 16


def _planted(rng, n, stretch=1, noise=0.0, query_range=(2, 20), reference_range=(10, 90)):
    """Random references holding a copy of each query (each row repeated `stretch` times)."""
    queries, references, truth = [], [], []
    for _ in range(n):
        q = int(rng.integers(*query_range))
        query = rng.standard_normal((q, DIM))
        length = int(rng.integers(max(reference_range[0], stretch * q), reference_range[1]))
        reference = rng.standard_normal((length, DIM))
        start = int(rng.integers(0, length - stretch * q + 1))
        copy = np.repeat(query, stretch, axis=0)
        reference[start : start + len(copy)] = copy + noise * rng.standard_normal(copy.shape)
        queries.append(query)
        references.append(reference)
        truth.append((start, start + len(copy)))
    return queries, references, np.array(truth)


# Chance.


def test_chance_segments_are_within_bounds_and_reproducible():
    lengths = np.array([1, 2, 5, 63, 64, 65, 300] * 200)
    chance = ChanceBaseline(seed=3)
    segments = chance.sample(lengths)
    duration = segments[:, 1] - segments[:, 0]
    assert segments.dtype == np.int32 and segments.shape == (len(lengths), 2)
    assert (segments[:, 0] >= 0).all() and (segments[:, 1] <= lengths).all()
    assert (duration >= 1).all() and (duration <= np.minimum(lengths, 64)).all()
    assert duration[lengths == 300].max() > 50
    np.testing.assert_array_equal(ChanceBaseline(seed=3).sample(lengths), segments)
    assert not np.array_equal(ChanceBaseline(seed=4).sample(lengths), segments)


def test_chance_is_uniform_over_segments():
    # A reference of 6 features has 21 segments; one of 100 has sum(100 - d + 1, d <= 64).
    for length in (6, 100):
        segments = ChanceBaseline(seed=0).sample(np.full(60000, length))
        windows = all_windows(length, 64)
        counts = np.zeros((length + 1, length + 1))
        np.add.at(counts, (segments[:, 0], segments[:, 1]), 1)
        observed = counts[windows[:, 0], windows[:, 1]]
        assert observed.sum() == len(segments)  # nothing outside the allowed segments
        expected = len(segments) / len(windows)
        chi2 = ((observed - expected) ** 2 / expected).sum()
        dof = len(windows) - 1
        assert chi2 < dof + 5 * np.sqrt(2 * dof), (length, chi2, dof)


def test_chance_predict_uses_reference_lengths():
    references = [np.zeros((n, DIM)) for n in (3, 40, 7)]
    segments = ChanceBaseline(seed=1).predict([np.zeros((2, DIM))] * 3, references)
    np.testing.assert_array_equal(segments, ChanceBaseline(seed=1).sample([3, 40, 7]))


# Frame-level.


def test_frame_level_finds_a_planted_exact_copy():
    rng = np.random.default_rng(0)
    queries, references, truth = _planted(rng, 50)
    predictor = FrameLevelBaseline(batch_size=16)  # several padded chunks of mixed lengths
    assert isinstance(predictor, SegmentPredictor)
    np.testing.assert_array_equal(predictor.predict(queries, references), truth)


def test_frame_level_finds_a_time_stretched_copy():
    rng = np.random.default_rng(1)
    queries, references, truth = _planted(rng, 40, stretch=2, noise=0.05, query_range=(4, 16))
    iou = temporal_iou(FrameLevelBaseline().predict(queries, references), truth)
    assert iou.min() > 0.5 and iou.mean() > 0.85, iou


def test_standardize_gives_zero_mean_unit_variance():
    x = np.random.default_rng(2).standard_normal((30, DIM)) * np.arange(1, DIM + 1) + 7.0
    z = standardize(x)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-5)


def test_normalized_frame_level_sees_through_each_videos_own_appearance():
    # Every video adds a large appearance of its own on a few dimensions (its scene): raw
    # matching then sees mostly that, while matching after standardizing each video finds the
    # copies again.
    rng = np.random.default_rng(3)
    queries, references, truth = _planted(rng, 60, noise=0.1, query_range=(6, 20))
    scale = np.r_[np.full(4, 20.0), np.ones(DIM - 4)]
    queries = [q * scale + 30.0 * rng.standard_normal(DIM) * scale for q in queries]
    references = [r * scale + 30.0 * rng.standard_normal(DIM) * scale for r in references]
    raw = temporal_iou(FrameLevelBaseline().predict(queries, references), truth).mean()
    normalized = FrameLevelBaseline(normalization="standardize")
    iou = temporal_iou(normalized.predict(queries, references), truth).mean()
    assert iou > 0.8 and iou > raw + 0.3, (raw, iou)
    with pytest.raises(ValueError, match="normalization"):
        FrameLevelBaseline(normalization="whiten")


def _brute_force_mean(table: np.ndarray) -> float:
    """The least mean cost over every path `frame_level_search` allows (enumerated)."""
    rows, cols = table.shape
    best = np.inf

    def walk(i, j, last, total, cells):
        nonlocal best
        if i == rows - 1:
            best = min(best, total / cells)
        moves = [(i + 1, j + 1, "G")]
        if last == "G":
            moves += [(i, j + 1, "H"), (i + 1, j, "V")]
        for a, b, kind in moves:
            if a < rows and b < cols:
                walk(a, b, kind, total + table[a, b], cells + 1)

    for j in range(cols):
        walk(0, j, "G", table[0, j], 1)
    return best


def test_frame_level_dynamic_programming_is_exact():
    rng = np.random.default_rng(2)
    for q, r in itertools.product((1, 2, 3, 4), (2, 3, 5, 6)):
        query = rng.standard_normal((1, q, 3))
        reference = rng.standard_normal((1, r, 3))
        segments, mean = frame_level_search(query, [q], reference, [r])
        table = distance_table(query, np.array([q]), reference, np.array([r]))[0]
        np.testing.assert_allclose(mean[0], _brute_force_mean(table), rtol=1e-9)
        assert 0 <= segments[0, 0] < segments[0, 1] <= r


def test_frame_level_falls_back_to_the_whole_reference_without_a_path():
    rng = np.random.default_rng(8)
    query, reference = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 4, 3))
    segments, mean = frame_level_search(query, [5, 5], reference, [2, 4])
    np.testing.assert_array_equal(segments[0], [0, 2])  # 5 rows need at least 3 columns
    assert np.isinf(mean[0]) and np.isfinite(mean[1])


def test_frame_level_output_length_can_differ_from_the_query():
    rng = np.random.default_rng(3)
    query = rng.standard_normal((6, DIM))
    reference = rng.standard_normal((40, DIM))
    reference[10:13] = query[::2]  # the query at double speed: 3 features
    reference[25:37] = np.repeat(query, 2, 0) + 3.0  # elsewhere, another feature direction
    segments = FrameLevelBaseline().predict([query], [reference])
    assert 2 <= segments[0, 1] - segments[0, 0] <= 4 and 9 <= segments[0, 0] <= 11


def test_unpad():
    features = np.arange(2 * 4 * 3).reshape(2, 4, 3)
    parts = unpad(features, np.array([2, 4]))
    assert [p.shape for p in parts] == [(2, 3), (4, 3)]
    np.testing.assert_array_equal(parts[1], features[1])


# Video-level.


def test_all_windows():
    windows = all_windows(5, max_segment_length=3)
    assert len(windows) == 5 + 4 + 3
    assert len({tuple(w) for w in windows}) == len(windows)
    assert (windows[:, 1] - windows[:, 0]).max() == 3 and windows[:, 1].max() == 5


def test_video_level_search_finds_a_planted_window():
    # The embedding of an exact copy equals the query's, whatever the weights: a check of the
    # exhaustive search's bookkeeping (starts, lengths, padding, several chunks).
    rng = np.random.default_rng(4)
    queries, references, truth = _planted(rng, 12, query_range=(2, 12), reference_range=(12, 40))
    baseline = VideoLevelBaseline(DIM, units=8, max_segment_length=16, seed=0)
    segments, distance = baseline.search(baseline.embed(queries), references, chunk=37)
    np.testing.assert_array_equal(segments, truth)
    np.testing.assert_allclose(distance, 0.0, atol=1e-6)


def _class_data(rng, classes=4, per_class=6):
    """References of noise holding one segment of a class pattern (plus noise)."""
    patterns = rng.standard_normal((classes, 8, DIM))
    queries, references, truth, labels = [], [], [], []
    for c, _ in itertools.product(range(classes), range(per_class)):
        length = int(rng.integers(4, 9))
        segment = patterns[c, :length] + 0.3 * rng.standard_normal((length, DIM))
        reference = rng.standard_normal((int(rng.integers(length + 8, 30)), DIM))
        start = int(rng.integers(0, len(reference) - length + 1))
        reference[start : start + length] = segment
        queries.append(segment.astype(np.float32))
        references.append(reference.astype(np.float32))
        truth.append((start, start + length))
        labels.append(c)
    return queries, references, np.array(truth), np.array(labels)


def test_video_level_training_reduces_the_triplet_loss():
    rng = np.random.default_rng(5)
    queries, references, truth, labels = _class_data(rng)
    baseline = VideoLevelBaseline(DIM, units=16, batch_size=16, max_segment_length=16, seed=0)
    features, lengths = baseline.sample_triplets(
        queries, references, truth, labels, 48, np.random.default_rng(9)
    )
    assert features.shape == (3 * 48, 16, DIM) and lengths.min() >= 1
    before = baseline.triplet_loss_value(features, lengths)
    losses = baseline.fit(queries, references, truth, labels, steps=60)
    after = baseline.triplet_loss_value(features, lengths)
    assert len(losses) == 60
    assert after < 0.5 * before, (before, after)


def test_video_level_triplets_respect_the_tiou_rules():
    rng = np.random.default_rng(6)
    queries, references, truth, labels = _class_data(rng)
    baseline = VideoLevelBaseline(DIM, units=4, max_segment_length=16, seed=0)
    features, lengths = baseline.sample_triplets(
        queries, references, truth, labels, 40, np.random.default_rng(0)
    )
    anchors, positives, negatives = np.split(features, 3)
    a_len, p_len, n_len = np.split(lengths, 3)

    def locate(rows, length):  # the (example, start) of a window among the references
        for k, reference in enumerate(references):
            for s in range(len(reference) - length + 1):
                if np.allclose(reference[s : s + length], rows[:length]):
                    return k, s
        raise AssertionError("window not found in any reference")

    query_class = {q.tobytes(): labels[k] for k, q in enumerate(queries)}
    for n in range(40):
        c = query_class[anchors[n, : a_len[n]].tobytes()]
        k, s = locate(positives[n], p_len[n])
        assert labels[k] == c
        window = np.array([[s, s + p_len[n]]])
        assert temporal_iou(window, truth[k : k + 1])[0] > 0.8
        k, s = locate(negatives[n], n_len[n])
        assert labels[k] == c
        assert temporal_iou(np.array([[s, s + n_len[n]]]), truth[k : k + 1])[0] < 0.2


@pytest.mark.parametrize("predictor", [ChanceBaseline(), FrameLevelBaseline()])
def test_predictors_return_int32_pairs(predictor):
    rng = np.random.default_rng(7)
    queries, references, _ = _planted(rng, 5)
    segments = predictor.predict(queries, references)
    assert segments.shape == (5, 2) and segments.dtype == np.int32
