"""Inference, Eq. (12): the most probable segment of at most 64 features."""

from __future__ import annotations

import tensorflow as tf

MAX_SEGMENT_LENGTH = 64  # features: 1024 frames, as the paper limits


def segment_scores(
    log_probabilities: tf.Tensor,
    reference_length: tf.Tensor,
    max_segment_length: int = MAX_SEGMENT_LENGTH,
) -> tf.Tensor:
    """Log of Eq. (12) for every start s and every length d + 1 <= `max_segment_length`.

    score[b, d, s] = log p_s^1 + log p_{s+d}^2 + mean_{i=s..s+d} log p_i^3, for the segment
    [s, s + d] (inclusive), and -inf where s + d is at or past the valid length.

    Args:
        log_probabilities: `(B, T, 4)` per-step log-probabilities.
        reference_length: `(B,)` int, valid reference steps.
        max_segment_length: The longest segment, in features.

    Returns:
        Scores of shape `(B, max_segment_length, T)` float32.
    """
    log_probabilities = tf.convert_to_tensor(log_probabilities, tf.float32)
    steps = tf.shape(log_probabilities)[1]
    width = max_segment_length
    start_lp = log_probabilities[:, :, 0]  # (B, T)
    end_lp = tf.pad(log_probabilities[:, :, 1], [[0, 0], [0, width]])  # (B, T + W)
    inside = tf.pad(log_probabilities[:, :, 2], [[0, 0], [1, width]])
    cumulative = tf.cumsum(inside, axis=1)  # cumulative[:, k] = sum of inside[:, :k]
    # frames[b, s, d] = x[b, s + d]
    end_frames = tf.signal.frame(end_lp, width, 1, axis=1)[:, :steps]  # (B, T, W)
    cum_frames = tf.signal.frame(cumulative[:, 1:], width, 1, axis=1)[:, :steps]
    lengths = tf.range(1, width + 1, dtype=tf.float32)  # d + 1
    mean_inside = (cum_frames - cumulative[:, :steps, None]) / lengths
    scores = start_lp[:, :, None] + end_frames + mean_inside  # (B, T, W)
    last = tf.range(steps)[:, None] + tf.range(width)[None, :]  # s + d
    valid = last[None] < tf.cast(reference_length, tf.int32)[:, None, None]
    scores = tf.where(valid, scores, -float("inf"))
    return tf.transpose(scores, [0, 2, 1])


def decode_segments(
    log_probabilities: tf.Tensor,
    reference_length: tf.Tensor,
    max_segment_length: int = MAX_SEGMENT_LENGTH,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Exact argmax of Eq. (12) in log space, for a padded batch.

    Ties go to the shortest segment, then the earliest start (the original release's order).

    Args:
        log_probabilities: `(B, T, 4)` per-step log-probabilities.
        reference_length: `(B,)` int, valid reference steps (at least 1).
        max_segment_length: The longest segment, in features.

    Returns:
        `(start, end, score)`: `(B,)` int32 start, `(B,)` int32 end (exclusive) and `(B,)`
        float32 log-score of the chosen segment.
    """
    scores = segment_scores(log_probabilities, reference_length, max_segment_length)
    steps = tf.shape(scores)[2]
    flat = tf.reshape(scores, [tf.shape(scores)[0], -1])  # d-major: shortest first
    best = tf.argmax(flat, axis=1, output_type=tf.int32)
    length_minus_one, start = best // steps, best % steps
    score = tf.gather(flat, best, axis=1, batch_dims=1)
    return start, start + length_minus_one + 1, score
