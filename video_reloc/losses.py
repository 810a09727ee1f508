"""Weighted cross-entropy of the localization layer, Eqs. (9) to (11)."""

from __future__ import annotations

import tensorflow as tf

START_END_WEIGHT = 10.0  # c_w of Eq. (10)


def localization_labels(groundtruth: tf.Tensor, steps: tf.Tensor | int) -> tf.Tensor:
    """Per-step label distributions g_i of Sec. 3.4.

    With a ground truth [s, e) (end exclusive, as the dataset stores it), the start step s gets
    [1/2, 0, 1/2, 0], the last step e - 1 gets [0, 1/2, 1/2, 0], the steps between get
    [0, 0, 1, 0] and the others [0, 0, 0, 1]. A one-step segment (e - 1 == s) gets
    [1/3, 1/3, 1/3, 0].

    Args:
        groundtruth: `(B, 2)` int, [start, end) of the segment in the reference.
        steps: T, the padded reference length.

    Returns:
        Labels of shape `(B, T, 4)` float32; each row sums to one.
    """
    groundtruth = tf.cast(groundtruth, tf.int32)
    t = tf.range(steps, dtype=tf.int32)[None, :]
    start, end = groundtruth[:, :1], groundtruth[:, 1:]
    is_start = tf.cast(tf.equal(t, start), tf.float32)
    is_end = tf.cast(tf.equal(t, end - 1), tf.float32)
    inside = tf.cast((t >= start) & (t < end), tf.float32)
    labels = tf.stack([is_start, is_end, inside, 1.0 - inside], axis=-1)
    return labels / tf.reduce_sum(labels, axis=-1, keepdims=True)


def step_weights(labels: tf.Tensor, start_end_weight: float = START_END_WEIGHT) -> tf.Tensor:
    """w_i of Eq. (10): `start_end_weight` where g_i^1 + g_i^2 > 0, else 1. Shape `(B, T)`."""
    boundary = labels[..., 0] + labels[..., 1] > 0
    return tf.where(boundary, start_end_weight, 1.0)


def localization_loss_sum(
    log_probabilities: tf.Tensor,
    groundtruth: tf.Tensor,
    reference_length: tf.Tensor,
    start_end_weight: float = START_END_WEIGHT,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The weighted cross entropy of Eq. (11), summed over valid steps, and the step count.

    Distributed training divides the sum by the global count of valid steps, which gives
    the same loss on any number of replicas.

    Args:
        log_probabilities: `(B, T, 4)` per-step log-probabilities of the model.
        groundtruth: `(B, 2)` int, [start, end) in the reference.
        reference_length: `(B,)` int, valid reference steps.
        start_end_weight: c_w of Eq. (10).

    Returns:
        `(loss_sum, valid_steps)`, two float32 scalars.
    """
    steps = tf.shape(log_probabilities)[1]
    labels = localization_labels(groundtruth, steps)
    per_step = -tf.reduce_sum(labels * log_probabilities, axis=-1)
    per_step *= step_weights(labels, start_end_weight)
    mask = tf.cast(tf.sequence_mask(reference_length, steps), per_step.dtype)
    return tf.reduce_sum(per_step * mask), tf.reduce_sum(mask)


def localization_loss(
    log_probabilities: tf.Tensor,
    groundtruth: tf.Tensor,
    reference_length: tf.Tensor,
    start_end_weight: float = START_END_WEIGHT,
) -> tf.Tensor:
    """Eq. (11), averaged over every valid step of the batch (as the original release does).

    Args:
        log_probabilities: `(B, T, 4)` per-step log-probabilities.
        groundtruth: `(B, 2)` int, [start, end) in the reference.
        reference_length: `(B,)` int, valid reference steps.
        start_end_weight: c_w of Eq. (10).

    Returns:
        A float32 scalar.
    """
    total, count = localization_loss_sum(
        log_probabilities, groundtruth, reference_length, start_end_weight
    )
    return total / tf.maximum(count, 1.0)
