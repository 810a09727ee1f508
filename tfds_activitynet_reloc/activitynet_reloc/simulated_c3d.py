"""Simulated C3D features on the structure of ActivityNet (config `simulated_c3d`).

Pure numpy (no TensorFlow). The result has the structure of `synthetic.generate` (and of
`tfds_activitynet_reloc.reorganize`): per split, segments with `id`, `label`, `location`,
`groundtruth`, plus the features of every video.

It models what makes C3D features of ActivityNet hard to re-localize:

* **Structure of the real dataset.** 200 classes split 160 / 20 / 20; the number of segments of
  every class, and the joint distribution of ground-truth length (1..32 features) and reference
  length (up to 300 features), follow the re-organized ActivityNet v1.3
  (`activitynet_statistics.py`, derived from the annotations and `length.json`). The ground
  truth lies anywhere in its reference window.
* **Shots dominate the feature.** A video is a sequence of shots of 4 to 32 features. Every row
  carries its shot's appearance: the video's scene (norm `scene_norm`) plus a change of its own
  per shot (norm `shot_norm`), on a PCA-like spectrum (variance falling as 1 / (d + 1) over
  the 500 dimensions, as PCA-500 of fc7 does). Shot cuts ignore the action's boundaries.
* **The action is a small signal in a low-dimensional subspace.** Actions live in a random
  16-dimensional subspace (norm `action_norm`, at least 5 times smaller than a shot's
  appearance). Each class has a pose (a mean), and a motion: a cycle of its own period (3 to 10
  features) through two directions of the subspace; every segment varies them a little.
* **Rendered differently in every video.** In each video the action subspace is turned by a
  random rotation (`rotation`) and scaled (`gain`), the motion starts at a random phase and
  runs at a speed of its own.
* **Background.** Between actions there is motion too, in the same subspace, of no class
  (`background_motion`), and the background drifts slowly (`drift_norm`); every row has
  i.i.d. noise (`noise_norm`).

So cosine matching of raw features is close to chance (the scene and the shots dominate every
distance), while matching after removing each video's local mean (`local_mean_removed`) finds
the action far above chance: the signal is there to be learned, and a model that learns to see
the subspace and the motion (not the 160 training classes' poses) transfers to unseen classes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import activitynet_statistics as stats
from .synthetic import FRAMES_PER_FEATURE, SPLITS, SyntheticData

DIM = 500
"""Feature dimension (C3D fc7 after PCA-500)."""
SUBSPACE = 16
"""Dimension of the action subspace."""
SEED = 2019
"""Seed of the whole generation."""
LOCAL_MEAN_WINDOW = 17
"""Width, in features, of the moving average that `local_mean_removed` subtracts."""


@dataclasses.dataclass(frozen=True)
class Rendering:
    """How the features are rendered: the norms of their parts and the variation of actions.

    Attributes:
        scene_norm: Norm of a video's scene appearance (shared by its shots).
        shot_norm: Norm of each shot's own change of appearance.
        drift_norm: Norm of the slow drift of the background.
        noise_norm: Norm of a row's i.i.d. noise.
        action_norm: Root-mean-square norm of an action's rows.
        background_motion: Norm of the motion of no class between actions.
        background_motion_fraction: Fraction of background rows with such motion.
        pose_weight: Share of an action's norm in its pose (the rest is its motion cycle).
        variation: Per-segment relative variation of a class's pose and motion.
        rotation: Scale of each video's random rotation of the action subspace (radians).
        gain: Range of each video's gain on its actions, `(low, high)`.
        speed: Range of a segment's speed factor on its class's motion period.
    """

    scene_norm: float = 12.0
    shot_norm: float = 6.0
    drift_norm: float = 2.0
    noise_norm: float = 2.0
    action_norm: float = 2.0
    background_motion: float = 1.0
    background_motion_fraction: float = 0.5
    pose_weight: float = 0.5
    variation: float = 0.3
    rotation: float = 0.35
    gain: tuple[float, float] = (0.7, 1.3)
    speed: tuple[float, float] = (0.8, 1.25)


def class_names(num_classes: int = stats.NUM_CLASSES) -> list[str]:
    """Names of the simulated classes, sorted."""
    return [f"simulated_class_{c:03d}" for c in range(num_classes)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _rotation(rng: np.random.Generator, dim: int, scale: float) -> np.ndarray:
    """A random rotation, the Cayley transform of a random skew-symmetric matrix."""
    a = rng.standard_normal((dim, dim)) * (scale / np.sqrt(dim))
    a = (a - a.T) / 2
    eye = np.eye(dim)
    return np.linalg.solve(eye - a, eye + a)


def _sample_lengths(rng: np.random.Generator) -> tuple[int, int]:
    """A (ground truth, reference) length pair from ActivityNet's joint histogram."""
    table = np.asarray(stats.LENGTH_HISTOGRAM, np.float64)
    cell = rng.choice(table.size, p=(table / table.sum()).ravel())
    row, column = divmod(int(cell), table.shape[1])
    groundtruth = row + 1
    low = max(stats.REFERENCE_BIN_EDGES[column], groundtruth)
    high = stats.REFERENCE_BIN_EDGES[column + 1]
    return groundtruth, int(rng.integers(low, max(high, low + 1)))


class _Classes:
    """Every class's pose, motion directions and period, in subspace coordinates."""

    def __init__(self, rng: np.random.Generator, num_classes: int):
        self.pose = _unit(rng.standard_normal((num_classes, SUBSPACE)))
        self.cos = _unit(rng.standard_normal((num_classes, SUBSPACE)))
        self.sin = _unit(rng.standard_normal((num_classes, SUBSPACE)))
        self.period = rng.uniform(3.0, 10.0, num_classes)


def _motion(
    rng: np.random.Generator,
    pose: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    period: float,
    steps: int,
    render: Rendering,
) -> np.ndarray:
    """`(steps, SUBSPACE)` rows of one segment of an action, unit root-mean-square norm."""

    def vary(v):
        return _unit(v + render.variation * rng.standard_normal(v.shape) / np.sqrt(SUBSPACE))

    speed = rng.uniform(*render.speed)
    angle = 2 * np.pi * (np.arange(steps) * speed / period + rng.uniform())
    cycle = np.cos(angle)[:, None] * vary(cos) + np.sin(angle)[:, None] * vary(sin)
    rows = np.sqrt(render.pose_weight) * vary(pose) + np.sqrt(1 - render.pose_weight) * cycle
    return rows / np.sqrt(np.mean(np.sum(rows**2, -1)))


def _shots(rng: np.random.Generator, steps: int) -> np.ndarray:
    """The shot index of each of `steps` rows: shots of 4 to 32 rows, the first one cut."""
    lengths = rng.integers(4, 33, size=steps // 4 + 2)
    bounds = np.cumsum(lengths) - rng.integers(0, lengths[0])
    return np.searchsorted(bounds, np.arange(steps), side="right")


def _render_video(
    rng: np.random.Generator,
    steps: int,
    action: tuple[int, int],
    label: int,
    classes: _Classes,
    basis: dict[str, np.ndarray],
    render: Rendering,
) -> np.ndarray:
    """`(steps, DIM)` float32 features of a video holding one action at rows `action`."""
    spectrum, subspace, drift = basis["spectrum"], basis["subspace"], basis["drift"]
    shot = _shots(rng, steps)
    appearance = rng.standard_normal((shot[-1] + 1, DIM)) * spectrum * render.shot_norm
    appearance += rng.standard_normal(DIM) * spectrum * render.scene_norm
    rows = appearance[shot]
    # The slow drift: a smooth walk along the drift directions.
    walk = np.cumsum(rng.standard_normal((steps, drift.shape[0])), 0) / np.sqrt(max(steps, 1))
    walk -= walk.mean(0)
    rows += (render.drift_norm / np.sqrt(drift.shape[0])) * walk @ drift
    rows += rng.standard_normal((steps, DIM)) * (render.noise_norm / np.sqrt(DIM))
    # Motion of no class on part of the background, then the action.
    motion = np.zeros((steps, SUBSPACE))
    a, b = action
    for lo, hi in ((0, a), (b, steps)):
        if hi - lo >= 2 and rng.uniform() < render.background_motion_fraction:
            directions = _unit(rng.standard_normal((3, SUBSPACE)))
            motion[lo:hi] = render.background_motion * _motion(
                rng, *directions, rng.uniform(3.0, 10.0), hi - lo, render
            )
    motion[a:b] = render.action_norm * _motion(
        rng, classes.pose[label], classes.cos[label], classes.sin[label],
        classes.period[label], b - a, render,
    )  # fmt: skip
    turn = _rotation(rng, SUBSPACE, render.rotation) * rng.uniform(*render.gain)
    rows += motion @ turn.T @ subspace
    return rows.astype(np.float32)


def generate(
    seed: int = SEED, render: Rendering = Rendering(), splits: tuple[str, ...] = SPLITS
) -> SyntheticData:
    """Generates the simulated dataset, deterministically.

    Args:
        seed: Random seed.
        render: How features are rendered.
        splits: The splits to generate; each split's draws are its own, so one split alone
            is the same as in the whole dataset.

    Returns:
        The generated data: 7593 / 829 / 978 segments, each in a video of its own whose
        features are its reference window (`location` is `[0, length)`).
    """
    rng = np.random.default_rng(seed)
    names = class_names()
    order = rng.permutation(stats.NUM_CLASSES)
    counts = {split: stats.SEGMENTS_PER_CLASS[split] for split in SPLITS}
    split_classes, start = {}, 0
    for split in SPLITS:
        split_classes[split] = order[start : start + len(counts[split])]
        start += len(counts[split])
    spectrum = 1.0 / np.sqrt(np.arange(1, DIM + 1))
    basis = {
        "spectrum": spectrum / np.linalg.norm(spectrum),
        "subspace": np.linalg.qr(rng.standard_normal((DIM, SUBSPACE)))[0].T,
        "drift": np.linalg.qr(rng.standard_normal((DIM, 8)))[0].T,
    }
    classes = _Classes(rng, stats.NUM_CLASSES)
    segments: dict[str, list[dict[str, Any]]] = {}
    features: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for split in splits:
        rng = np.random.default_rng([seed, SPLITS.index(split)])
        items = []
        for c, count in zip(split_classes[split], rng.permutation(counts[split]), strict=True):
            for k in range(int(count)):
                vid = f"sim_{split}_{int(c):03d}_{k:03d}"
                groundtruth, window = _sample_lengths(rng)
                start = int(rng.integers(0, window - groundtruth + 1))
                action = (start, start + groundtruth)
                features[vid] = _render_video(rng, window, action, int(c), classes, basis, render)
                seconds[vid] = FRAMES_PER_FEATURE / float(rng.choice([24.0, 25.0, 30.0]))
                items.append(
                    {
                        "id": vid,
                        "label": int(c),
                        "location": [0, window],
                        "groundtruth": list(action),
                    }
                )
        segments[split] = sorted(items, key=lambda s: s["id"])
    return SyntheticData(names, segments, features, seconds)


def local_mean_removed(features: np.ndarray, window: int = LOCAL_MEAN_WINDOW) -> np.ndarray:
    """Each row minus the mean of the rows within `window // 2` of it (in its own video).

    Args:
        features: `(T, D)` rows of one video (or query).
        window: Width of the centred moving average; shorter near the ends.

    Returns:
        `(T, D)` float32.
    """
    x = np.asarray(features, np.float64)
    half = window // 2
    cumulative = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, 0)])
    index = np.arange(len(x))
    lo, hi = np.maximum(index - half, 0), np.minimum(index + half + 1, len(x))
    mean = (cumulative[hi] - cumulative[lo]) / (hi - lo)[:, None]
    return (x - mean).astype(np.float32)
