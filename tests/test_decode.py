"""Eq. (12) decoding against a brute-force search."""

import numpy as np
import pytest

from video_reloc.decode import MAX_SEGMENT_LENGTH, decode_segments


def _brute_force(log_probabilities, length, max_len=MAX_SEGMENT_LENGTH):
    """Every (s, e), shortest first then earliest start; returns start, end (exclusive), score."""
    best = (None, None, -np.inf)
    for d in range(min(length, max_len)):
        for s in range(length - d):
            e = s + d
            score = (
                log_probabilities[s, 0]
                + log_probabilities[e, 1]
                + np.mean(log_probabilities[s : e + 1, 2])
            )
            if score > best[2]:
                best = (s, e + 1, score)
    return best


def _random_log_probs(rng, batch, steps, quantize=False):
    logits = rng.standard_normal((batch, steps, 4)) * 2
    if quantize:  # many exact ties
        logits = np.round(logits)
    return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype("float32")


@pytest.mark.parametrize(
    "lengths",
    [[1], [5], [64], [65], [150], [1, 7, 70, 100, 33]],
)
def test_equals_brute_force(lengths):
    rng = np.random.default_rng(len(lengths) * 100 + lengths[0])
    steps = max(lengths) + 3  # padded batch
    log_probs = _random_log_probs(rng, len(lengths), steps)
    start, end, score = (np.asarray(t) for t in decode_segments(log_probs, np.array(lengths)))
    for b, n in enumerate(lengths):
        s, e, v = _brute_force(log_probs[b].astype(np.float64), n)
        assert (start[b], end[b]) == (s, e)
        assert score[b] == pytest.approx(v, abs=1e-4)
        assert 0 <= start[b] < end[b] <= n and end[b] - start[b] <= MAX_SEGMENT_LENGTH


def test_ties_go_to_shortest_then_earliest():
    log_probs = np.log(np.full((1, 10, 4), 0.25, "float32"))
    start, end, _ = decode_segments(log_probs, np.array([10]))
    assert (int(start[0]), int(end[0])) == (0, 1)
    rng = np.random.default_rng(3)
    log_probs = _random_log_probs(rng, 4, 40, quantize=True)
    start, end, _ = decode_segments(log_probs, np.array([40, 12, 3, 39]))
    for b, n in enumerate([40, 12, 3, 39]):
        s, e, _ = _brute_force(log_probs[b].astype(np.float64), n)
        assert (int(start[b]), int(end[b])) == (s, e)


def test_padding_is_never_chosen():
    log_probs = np.log(np.full((1, 20, 4), 0.01, "float32"))
    log_probs[0, 10:, :] = 0.0  # a perfect segment, but in the padding
    start, end, _ = decode_segments(log_probs, np.array([10]))
    assert int(end[0]) <= 10


def test_max_segment_length_is_respected():
    log_probs = np.log(np.full((1, 200, 4), 1e-3, "float32"))
    log_probs[0, 0, 0] = log_probs[0, 150, 1] = 0.0
    log_probs[0, :, 2] = 0.0
    start, end, _ = decode_segments(log_probs, np.array([200]), max_segment_length=64)
    assert int(end[0]) - int(start[0]) <= 64
    start, end, _ = decode_segments(log_probs, np.array([200]), max_segment_length=200)
    assert (int(start[0]), int(end[0])) == (0, 151)
