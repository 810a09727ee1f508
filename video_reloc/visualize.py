"""Images for TensorBoard, drawn with numpy: segments on a reference timeline and attention maps.

`timeline_image` shows, for a few pairs, the true segment, the predicted one and the per-step
probabilities of start, end and inside on the reference's time axis (as the paper's Fig. 4);
`attention_image` shows the forward matching's attention of every reference step over the
query steps (Fig. 5). Both return `uint8` RGB arrays `(H, W, 3)` for `tf.summary.image`.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = (255, 255, 255)
TIMELINE = (215, 215, 215)  # the valid part of a reference
TRUTH = (40, 160, 60)
PREDICTION = (210, 50, 40)


def _scale(length: int, width: int) -> int:
    return max(1, width // max(1, length))


def timeline_image(
    groundtruth: np.ndarray,
    predicted: np.ndarray,
    reference_length: np.ndarray,
    probabilities: np.ndarray | None = None,
    width: int = 480,
    bar: int = 8,
) -> np.ndarray:
    """True against predicted segments on each pair's reference timeline (Fig. 4).

    Each pair is a block of rows: the true segment (green), the predicted one (red) and, when
    `probabilities` are given, a strip whose red, blue and green channels are the start, end and
    inside probabilities of each step. One step is `width // max(reference_length)` pixels wide.

    Args:
        groundtruth: `(K, 2)` true [start, end) in steps.
        predicted: `(K, 2)` predicted [start, end).
        reference_length: `(K,)` valid steps of each reference.
        probabilities: Optional `(K, T, 4)` per-step probabilities (start, end, inside, outside).
        width: About the image width in pixels.
        bar: Height of one bar in pixels.

    Returns:
        `(H, W, 3)` uint8 image.
    """
    groundtruth = np.asarray(groundtruth, np.int64).reshape(-1, 2)
    predicted = np.asarray(predicted, np.int64).reshape(-1, 2)
    reference_length = np.asarray(reference_length, np.int64).reshape(-1)
    steps = int(reference_length.max())
    px = _scale(steps, width)
    rows = 3 if probabilities is not None else 2
    block = rows * bar + bar // 2
    image = np.full((len(groundtruth) * block, steps * px, 3), BACKGROUND, np.uint8)
    for k, length in enumerate(reference_length):
        top = k * block
        for r, (segment, color) in enumerate(((groundtruth[k], TRUTH), (predicted[k], PREDICTION))):
            y = slice(top + r * bar, top + (r + 1) * bar - 1)
            image[y, : length * px] = TIMELINE
            s, e = np.clip(segment, 0, length)
            image[y, s * px : e * px] = color
        if probabilities is not None:
            p = np.clip(np.asarray(probabilities[k, :length], np.float64), 0.0, 1.0)
            strip = np.stack([p[:, 0], p[:, 2], p[:, 1]], axis=-1)  # start R, inside G, end B
            strip = np.repeat((255 * strip).astype(np.uint8), px, axis=0)
            image[top + 2 * bar : top + 3 * bar - 1, : length * px] = strip[None]
    return image


def attention_image(
    attention: np.ndarray,
    reference_length: int,
    query_length: int,
    groundtruth: tuple[int, int] | np.ndarray | None = None,
    pixels: int = 4,
) -> np.ndarray:
    """The attention of each reference step (rows) over the query steps (columns) (Fig. 5).

    Each row is scaled by its maximum so that the attended query step is white. A green band
    left of the map marks the true segment's rows.

    Args:
        attention: `(Tr, Tq)` attention weights (padding is cut off).
        reference_length: Valid reference steps.
        query_length: Valid query steps.
        groundtruth: Optional [start, end) of the true segment in the reference.
        pixels: Pixels per step.

    Returns:
        `(reference_length * pixels, (query_length + 2) * pixels, 3)` uint8 image.
    """
    a = np.asarray(attention, np.float64)[:reference_length, :query_length]
    a = a / np.maximum(a.max(axis=1, keepdims=True), 1e-12)
    gray = np.repeat(np.repeat((255 * a).astype(np.uint8), pixels, 0), pixels, 1)
    image = np.full((gray.shape[0], gray.shape[1] + 2 * pixels, 3), BACKGROUND, np.uint8)
    image[:, 2 * pixels :] = gray[..., None]
    if groundtruth is not None:
        s, e = np.clip(np.asarray(groundtruth, np.int64), 0, reference_length)
        image[s * pixels : e * pixels, : pixels + pixels // 2] = TRUTH
    return image


def stack_images(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Stacks images vertically on a white background, left-aligned, `gap` pixels apart."""
    width = max(image.shape[1] for image in images)
    height = sum(image.shape[0] for image in images) + gap * (len(images) - 1)
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    y = 0
    for image in images:
        canvas[y : y + image.shape[0], : image.shape[1]] = image
        y += image.shape[0] + gap
    return canvas
