"""A small manual dir of config `custom`: another taxonomy, another D, `features.hdf5`.

Five kitchen classes (not ActivityNet's), ten videos each holding one or two segments, feature
dimension 24, one row per 16-frame clip (as `video-reloc-features` writes them). Rows of a
segment carry its class's direction on top of noise, so the data are learnable.
"""

from __future__ import annotations

import json
import pathlib

import h5py
import numpy as np

CLASSES = ("Cracking eggs", "Kneading dough", "Peeling apples", "Slicing bread", "Stirring soup")
DIM = 24
FPS = 8.0  # sampled frames per second
CLIP = 16  # frames per feature: 2 seconds
VIDEOS_PER_CLASS = 6


def taxonomy(classes=CLASSES) -> list[dict]:
    """A two-level taxonomy: a root, one parent, the classes as leaves (ids from 10)."""
    nodes = [
        {"nodeId": 1, "nodeName": "Everything", "parentId": None, "parentName": None},
        {"nodeId": 2, "nodeName": "Kitchen", "parentId": 1, "parentName": "Everything"},
    ]
    for k, name in enumerate(classes):
        nodes.append({"nodeId": 10 + k, "nodeName": name, "parentId": 2, "parentName": "Kitchen"})
    return nodes


def write_manual_dir(
    root: pathlib.Path,
    classes=CLASSES,
    videos_per_class: int = VIDEOS_PER_CLASS,
    dim: int = DIM,
    seed: int = 0,
) -> pathlib.Path:
    """Writes annotations, `length.json`, `features.hdf5` and `features.json` under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((len(classes), dim)).astype(np.float32)
    database, lengths = {}, {}
    with h5py.File(root / "features.hdf5", "w") as h5:
        for c, name in enumerate(classes):
            for k in range(videos_per_class):
                vid = f"{name.split()[0].lower()}_{k}"
                n_feat = int(rng.integers(20, 60))
                n_frames = n_feat * CLIP - int(rng.integers(0, CLIP))  # a partial last clip
                duration = n_frames / FPS
                rows = rng.standard_normal((n_feat, dim)).astype(np.float32)
                length = int(rng.integers(3, 12))
                start = int(rng.integers(0, n_feat - length))
                rows[start : start + length] += 2.5 * directions[c]
                seconds = CLIP / FPS
                database[vid] = {
                    "duration": duration,
                    "subset": "training",
                    "annotations": [
                        {
                            "segment": [start * seconds, (start + length) * seconds - 0.5],
                            "label": name,
                        }
                    ],
                }
                lengths[vid] = {"n_frames": n_frames, "n_feat": n_feat}
                h5.create_dataset(f"v_{vid}/features", data=rows)
    annotations = {"version": "custom", "taxonomy": taxonomy(classes), "database": database}
    (root / "activity_net.v1-3.min.json").write_text(json.dumps(annotations))
    (root / "length.json").write_text(json.dumps(lengths))
    info = {
        "backbone": "generated",
        "weights_sha256": "0" * 64,
        "frame_rate": FPS,
        "clip_length": CLIP,
        "frame_size": [32, 32],
        "feature_dim": dim,
    }
    (root / "features.json").write_text(json.dumps(info))
    return root
