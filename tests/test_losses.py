"""Eqs. (9) to (11): labels, weights and the loss value."""

import numpy as np
import pytest
import tensorflow as tf

from video_reloc.losses import localization_labels, localization_loss, step_weights


@pytest.mark.parametrize(
    "groundtruth,steps,expected",
    [
        # s < e: start, inside, end, outside.
        ((1, 4), 6, {1: [0.5, 0, 0.5, 0], 2: [0, 0, 1, 0], 3: [0, 0.5, 0.5, 0]}),
        # s = e: one step.
        ((2, 3), 5, {2: [1 / 3, 1 / 3, 1 / 3, 0]}),
        # s at 0, e at the last step.
        ((0, 5), 5, {0: [0.5, 0, 0.5, 0], 4: [0, 0.5, 0.5, 0]}),
        ((0, 1), 1, {0: [1 / 3, 1 / 3, 1 / 3, 0]}),
        ((0, 2), 2, {0: [0.5, 0, 0.5, 0], 1: [0, 0.5, 0.5, 0]}),
    ],
)
def test_labels(groundtruth, steps, expected):
    labels = np.asarray(localization_labels(tf.constant([groundtruth]), steps))[0]
    assert labels.shape == (steps, 4)
    np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-6)
    s, e = groundtruth
    for t in range(steps):
        want = expected.get(t, [0, 0, 1, 0] if s <= t < e else [0, 0, 0, 1])
        np.testing.assert_allclose(labels[t], want, rtol=1e-6, err_msg=f"step {t}")
    weights = np.asarray(step_weights(labels[None]))[0]
    boundary = {s, e - 1}
    np.testing.assert_allclose(weights, [10.0 if t in boundary else 1.0 for t in range(steps)])


def test_loss_value_is_weighted_mean_over_valid_steps():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 6, 4))
    log_probs = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype("float32")
    gt = np.array([[1, 3], [0, 1]], "int32")
    lengths = np.array([6, 2], "int32")
    total, count = 0.0, 0
    for b in range(2):
        labels = np.asarray(localization_labels(gt[b : b + 1], 6))[0]
        for t in range(lengths[b]):
            w = 10.0 if labels[t, 0] + labels[t, 1] > 0 else 1.0
            total += -w * np.sum(labels[t] * log_probs[b, t])
            count += 1
    loss = float(localization_loss(log_probs, gt, lengths))
    assert loss == pytest.approx(total / count, rel=1e-5)
    # Padding does not count: changing padded steps changes nothing.
    log_probs[1, 2:] = -50.0
    assert float(localization_loss(log_probs, gt, lengths)) == pytest.approx(
        total / count, rel=1e-5
    )
