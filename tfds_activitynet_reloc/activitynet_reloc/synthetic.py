"""Deterministic synthetic stand-in for the ActivityNet re-localization dataset.

Pure numpy (no TensorFlow), so tests can call `generate` directly. The result has
the structure of `tfds_activitynet_reloc.reorganize` (per split, segments with
`id`, `label`, `location`, `groundtruth`) plus the features of every video.

How a video is made (all draws from `np.random.RandomState(seed)`):

* Classes: `num_classes` classes, split 80 / 10 / 10 % (train / validation / test)
  by a seeded permutation. Class `c` has a prototype: a unit direction `u_c`, a
  second unit direction `v_c` and a temporal pattern: row `k` of a segment of
  length `g` is `u_c + 0.6 * sin(pi * f_c * (k + 0.5) / g + phi_c) * v_c`.
* Each segment is its own video: a reference window of 20..120 rows holding exactly
  one segment (2..32 rows) of the class, 0..2 shorter segments of other classes of
  the same split (distractors), and 0..10 background rows before and after the
  window (`location` is the window in the video).
* Appearance varies between videos: every row is `offset_v + nuisance_v(t) + noise`
  (a per-video random offset of norm about 2, per-video slowly varying content of
  norm about `NUISANCE` in a fixed 32-d subspace that carries no class signal, i.i.d.
  noise with std `NOISE`), and activity rows add `scale_v * R_v @ (strength *
  pattern)` where `scale_v` is in [0.75, 1.25], `R_v` is a per-video small random
  rotation and `strength` is in [2, 3] per segment. Class prototypes live in the
  other 32-d subspace. Raw-feature matching between videos is therefore poor (an
  exhaustive cosine-similarity search reaches a mean IoU of about 0.5), while a
  learned projection removes the nuisance, so a small model learns the task fast.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

DIM = 64
"""Feature dimension of the synthetic dataset."""
NUM_CLASSES = 100
"""Number of synthetic classes (80 train, 10 validation, 10 test)."""
SEGMENTS_PER_CLASS = 20
"""Segments (videos) per class in every split."""
SEED = 2018
"""Seed of the whole generation."""
NOISE = 0.35
"""Standard deviation of the i.i.d. feature noise."""
NUISANCE = 6.0
"""Norm of the per-video content in the nuisance subspace (which carries no class signal)."""
FRAMES_PER_FEATURE = 16

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class SyntheticData:
    """A generated dataset.

    Attributes:
        class_names: Names of all classes; a segment's `label` indexes this list.
        segments: Split name -> segments (dicts with `id`, `label`, `location`,
            `groundtruth`, as `reorganize` returns them).
        features: Video id -> float32 features of the whole video, shape (n, DIM).
        seconds_per_feature: Video id -> seconds covered by one feature row.
    """

    class_names: list[str]
    segments: dict[str, list[dict[str, Any]]]
    features: dict[str, np.ndarray]
    seconds_per_feature: dict[str, float]


def class_names(num_classes: int = NUM_CLASSES) -> list[str]:
    """Names of the synthetic classes, sorted."""
    return [f"synthetic_class_{c:03d}" for c in range(num_classes)]


def _small_rotation(rng: np.random.RandomState, dim: int, eps: float) -> np.ndarray:
    q, r = np.linalg.qr(np.eye(dim) + eps * rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def _place(
    rng: np.random.RandomState, length: int, size: int, taken: list[tuple[int, int]]
) -> int | None:
    """Start of a `size`-row span in [0, length) that keeps a row gap to `taken`, or None."""
    for _ in range(20):
        st = int(rng.randint(0, length - size + 1))
        if all(st + size + 1 <= a or st >= b + 1 for a, b in taken):
            return st
    return None


def _nuisance(rng: np.random.RandomState, n: int, nuisance: np.ndarray) -> np.ndarray:
    """Per-video, slowly varying content of norm about NUISANCE in the nuisance subspace."""
    k = nuisance.shape[1]
    steps = rng.standard_normal((n, k))
    walk = np.empty((n, k))
    walk[0] = steps[0]
    for t in range(1, n):
        walk[t] = 0.9 * walk[t - 1] + np.sqrt(1 - 0.81) * steps[t]
    base = rng.standard_normal(k)
    return (NUISANCE / np.sqrt(2 * k)) * (base + walk) @ nuisance.T


def generate(
    num_classes: int = NUM_CLASSES,
    segments_per_class: int = SEGMENTS_PER_CLASS,
    dim: int = DIM,
    seed: int = SEED,
) -> SyntheticData:
    """Generates the synthetic dataset, deterministically.

    Args:
        num_classes: Number of classes (at least 3); split 80 / 10 / 10 %, at least one
            class per split.
        segments_per_class: Segments (each in its own video) per class.
        dim: Feature dimension.
        seed: Random seed.

    Returns:
        The generated `SyntheticData`.
    """
    if num_classes < 3 or segments_per_class < 2:
        raise ValueError("need num_classes >= 3 and segments_per_class >= 2")
    rng = np.random.RandomState(seed)
    names = class_names(num_classes)
    perm = rng.permutation(num_classes)
    n_val = max(1, round(0.1 * num_classes))
    n_train = num_classes - 2 * n_val
    split_classes = {
        "train": sorted(perm[:n_train].tolist()),
        "validation": sorted(perm[n_train : n_train + n_val].tolist()),
        "test": sorted(perm[n_train + n_val :].tolist()),
    }
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    signal, nuisance = basis[:, : dim // 2], basis[:, dim // 2 :]
    u = rng.standard_normal((num_classes, dim // 2)) @ signal.T
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = rng.standard_normal((num_classes, dim // 2)) @ signal.T
    v -= np.sum(u * v, axis=1, keepdims=True) * u
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    freq = rng.uniform(1.0, 2.0, num_classes)
    phase = rng.uniform(0.0, 2 * np.pi, num_classes)

    def pattern(c: int, g: int) -> np.ndarray:
        k = (np.arange(g) + 0.5) / g
        return u[c] + 0.6 * np.sin(np.pi * freq[c] * k + phase[c])[:, None] * v[c]

    segments: dict[str, list[dict[str, Any]]] = {}
    features: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for split in SPLITS:
        classes = split_classes[split]
        items = []
        for c in classes:
            for k in range(segments_per_class):
                vid = f"syn_{split}_{c:03d}_{k:03d}"
                window = int(rng.randint(20, 121))
                g = int(rng.randint(2, min(32, window - 2) + 1))
                gt0 = _place(rng, window, g, [])
                spans = [(gt0, gt0 + g, c)]
                others = [o for o in classes if o != c]
                for _ in range(int(rng.randint(0, 3)) if others else 0):
                    size = int(rng.randint(2, 17))
                    st = _place(rng, window, size, [(a, b) for a, b, _ in spans])
                    if st is not None:
                        spans.append((st, st + size, others[rng.randint(len(others))]))
                before, after = int(rng.randint(0, 11)), int(rng.randint(0, 11))
                n = before + window + after
                offset = rng.standard_normal(dim) * (2.0 / np.sqrt(dim))
                scale = rng.uniform(0.75, 1.25)
                rot = _small_rotation(rng, dim, 0.15 / np.sqrt(dim))
                feats = offset + NOISE * rng.standard_normal((n, dim))
                feats += _nuisance(rng, n, nuisance)
                for a, b, label in spans:
                    strength = rng.uniform(2.0, 3.0)
                    act = strength * pattern(label, b - a)
                    feats[before + a : before + b] += scale * act @ rot.T
                features[vid] = feats.astype(np.float32)
                seconds[vid] = FRAMES_PER_FEATURE / float(rng.choice([24.0, 25.0, 30.0]))
                items.append(
                    {
                        "id": vid,
                        "label": c,
                        "location": [before, before + window],
                        "groundtruth": [gt0, gt0 + g],
                    }
                )
        segments[split] = items
    return SyntheticData(names, segments, features, seconds)
