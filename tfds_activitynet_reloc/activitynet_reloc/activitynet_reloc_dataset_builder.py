"""activitynet_reloc: the video re-localization dataset of Feng et al. (ECCV 2018, Sec. 4).

Build with `tfds build tfds_activitynet_reloc/activitynet_reloc --manual_dir=DIR`
(config `c3d`, the default), `--config=synthetic` or `--config=simulated_c3d` (generated, no
download).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import pathlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

if importlib.util.find_spec("tfds_activitynet_reloc") is None:
    # `tfds build tfds_activitynet_reloc/activitynet_reloc` imports this folder as a
    # top-level package; make the rules module importable from the checkout.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from tfds_activitynet_reloc.reorganize import (  # noqa: E402
    ACTIVITYNET_CLASSES,
    FRAMES_PER_FEATURE,
    PAIR_SEED,
    RELEASE_PERM,
    draw_pairs,
    leaf_classes,
    reorganize,
)

from . import simulated_c3d, synthetic  # noqa: E402

ANNOTATIONS_FILE = "activity_net.v1-3.min.json"
LENGTHS_FILE = "length.json"

_TFDS_SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class ActivitynetRelocConfig(tfds.core.BuilderConfig):
    """BuilderConfig of activitynet_reloc.

    Attributes:
        source: `"activitynet"` (features from the manual HDF5 file), `"synthetic"` or
            `"simulated_c3d"` (generated).
        features_file: HDF5 file in the manual dir (group `v_<id>` per video).
        feature_name: Dataset name inside each video's group.
        subsample: Keep every `subsample`-th row of the HDF5 dataset.
        feature_dim: Feature dimension of the schema; the file's dimension must match
            (None: any, schema shape (None, None)).
        frames_per_feature: Video frames per kept feature row.
        pair_seed: Seed of the fixed validation/test pairs.
        synthetic_num_classes: Classes of the synthetic data (split 80/10/10 %).
        synthetic_segments_per_class: Segments per class of the synthetic data.
    """

    source: str = "activitynet"
    features_file: str = "sub_activitynet_v1-3.c3d.hdf5"
    feature_name: str = "c3d_features"
    subsample: int = 2
    feature_dim: int | None = 500
    frames_per_feature: int = FRAMES_PER_FEATURE
    pair_seed: int = PAIR_SEED
    synthetic_num_classes: int = synthetic.NUM_CLASSES
    synthetic_segments_per_class: int = synthetic.SEGMENTS_PER_CLASS


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for activitynet_reloc."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Features stored as raw bytes; config simulated_c3d.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Config `c3d` needs three files in `--manual_dir`:
    * `{ANNOTATIONS_FILE}`: ActivityNet v1.3 annotations, from
      http://activity-net.org/download.html (also in the ActivityNet GitHub repository
      `activitynet/ActivityNet`, `Evaluation/data/activity_net.v1-3.min.json`).
    * `sub_activitynet_v1-3.c3d.hdf5`: C3D features (500-d PCA of fc7, a row every 8
      frames), from the ActivityNet Challenge 2016 page
      http://activity-net.org/challenges/2016/download.html ("C3D features").
    * `{LENGTHS_FILE}`: frame and feature counts of every video, `data/length.json` of
      the original release https://github.com/fengyang0317/video_reloc.
    Config `synthetic` needs no download.
    """
    BUILDER_CONFIGS = [
        ActivitynetRelocConfig(
            name="c3d",
            description="ActivityNet v1.3 reorganized as in the paper, C3D features (D=500).",
        ),
        ActivitynetRelocConfig(
            name="synthetic",
            description="Deterministic synthetic data of the same structure (D=64), no download.",
            source="synthetic",
            feature_dim=synthetic.DIM,
        ),
        ActivitynetRelocConfig(
            name="simulated_c3d",
            description=(
                "Generated features that are hard the way C3D features of ActivityNet are "
                "(D=500): ActivityNet's classes, split and segment and reference lengths; shots "
                "whose appearance dominates every feature; the action a small signal in a "
                "16-dimensional subspace, rendered differently in every video. No download."
            ),
            source="simulated_c3d",
            feature_dim=simulated_c3d.DIM,
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "c3d"

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        if cfg.source == "synthetic":
            names = synthetic.class_names(cfg.synthetic_num_classes)
        elif cfg.source == "simulated_c3d":
            names = simulated_c3d.class_names()
        else:
            names = list(ACTIVITYNET_CLASSES)
        # Raw bytes: a hundred times faster to write than a float list of every value.
        feats = tfds.features.Tensor(
            shape=(None, cfg.feature_dim), dtype=np.float32, encoding=tfds.features.Encoding.BYTES
        )
        loc = tfds.features.Tensor(shape=(2,), dtype=np.int32)
        sec = tfds.features.Tensor(shape=(), dtype=np.float32)
        features = tfds.features.FeaturesDict(
            {
                "query": feats,
                "query_id": tfds.features.Text(),
                "query_location": loc,
                "query_seconds_per_feature": sec,
                "reference": feats,
                "reference_id": tfds.features.Text(),
                "reference_location": loc,
                "reference_seconds_per_feature": sec,
                "groundtruth": loc,
                "label": tfds.features.ClassLabel(names=names),
            }
        )
        return self.dataset_info_from_configs(
            features=features,
            homepage="https://github.com/fengyang0317/video_reloc",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.builder_config
        if cfg.source in ("synthetic", "simulated_c3d"):
            if cfg.source == "synthetic":
                data = synthetic.generate(
                    cfg.synthetic_num_classes, cfg.synthetic_segments_per_class, cfg.feature_dim
                )
            else:
                data = simulated_c3d.generate()
            segments = {
                split: [dict(s, label=data.class_names[s["label"]]) for s in segs]
                for split, segs in data.segments.items()
            }
            plans = {s: _plan(s, segments[s], data.seconds_per_feature, cfg) for s in _TFDS_SPLITS}
            return {
                s: self._generate_examples(plans[s], None, data.features.__getitem__) for s in plans
            }

        manual_dir = pathlib.Path(dl_manager.manual_dir)
        paths = {
            name: manual_dir / name for name in (ANNOTATIONS_FILE, LENGTHS_FILE, cfg.features_file)
        }
        for name, path in paths.items():
            if not path.exists():
                raise FileNotFoundError(
                    f"Manual file {name} not found in {manual_dir}. Download it there using "
                    f"instructions:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
                )
        annotations = _read_json(paths[ANNOTATIONS_FILE])
        lengths = _read_json(paths[LENGTHS_FILE])
        try:
            classes = leaf_classes(annotations["taxonomy"])
            if tuple(classes) != ACTIVITYNET_CLASSES:
                raise ValueError(
                    f"the taxonomy has {len(classes)} leaf classes, not the 200 of v1.3"
                )
            segments = reorganize(
                annotations, lengths, RELEASE_PERM, frames_per_feature=cfg.frames_per_feature
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{paths[ANNOTATIONS_FILE]} / {paths[LENGTHS_FILE]}: {e}") from e
        names = {node_id: name for name, node_id in classes.items()}
        seconds = {}
        for segs in segments.values():
            for s in segs:
                video = annotations["database"][s["id"]]
                seconds[s["id"]] = (
                    float(video["duration"]) / lengths[s["id"]]["n_frames"] * cfg.frames_per_feature
                )
                s["label"] = names[s["label"]]

        h5_path = paths[cfg.features_file]
        needed = list(dict.fromkeys(s["id"] for segs in segments.values() for s in segs))
        missing = _check_features(h5_path, needed, lengths, cfg)
        if missing:
            n_seg = sum(s["id"] in missing for segs in segments.values() for s in segs)
            logging.warning(
                "%d of %d videos are not in %s; their %d segments are skipped: %s",
                len(missing),
                len(needed),
                h5_path.name,
                n_seg,
                " ".join(sorted(missing)),
            )
        plans = {
            split: _plan(
                split, [s for s in segments[split] if s["id"] not in missing], seconds, cfg
            )
            for split in _TFDS_SPLITS
        }
        return {s: self._generate_examples(plans[s], h5_path, None) for s in plans}

    def _generate_examples(
        self,
        plan: Sequence[Mapping[str, Any]],
        h5_path: pathlib.Path | None,
        get_features: Callable[[str], np.ndarray] | None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yields the planned (query, reference) examples, reading the features."""
        cfg = self.builder_config
        h5 = h5py.File(h5_path, "r") if h5_path is not None else None
        try:
            if h5 is not None:

                @functools.lru_cache(maxsize=32)
                def get_features(video_id: str) -> np.ndarray:
                    rows = h5[f"v_{video_id}"][cfg.feature_name][()][:: cfg.subsample]
                    return rows.astype(np.float32)

            for key, ex in enumerate(plan):
                q0, q1 = ex["query_location"]
                r0, r1 = ex["reference_location"]
                yield (
                    f"{key:06d}_{ex['reference_id']}",
                    dict(
                        ex,
                        query=get_features(ex["query_id"])[q0:q1],
                        reference=get_features(ex["reference_id"])[r0:r1],
                    ),
                )
        finally:
            if h5 is not None:
                h5.close()


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON (truncated or corrupt?): {e}") from e


def _check_features(
    path: pathlib.Path, video_ids: Sequence[str], lengths: Mapping[str, Any], cfg
) -> set[str]:
    """Reads every needed video once; returns the missing ones, raises on bad ones."""
    missing = set()
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: cannot open as HDF5 (truncated or corrupt?): {e}") from e
    with h5:
        for vid in video_ids:
            group = f"v_{vid}"
            if group not in h5:
                missing.add(vid)
                continue
            where = f"{path}: video {vid}"
            try:
                dset = h5[group][cfg.feature_name]
                rows = dset[()][:: cfg.subsample]
            except (KeyError, OSError, TypeError) as e:
                raise ValueError(f"{where}: cannot read {group}/{cfg.feature_name}: {e}") from e
            if rows.ndim != 2:
                raise ValueError(f"{where}: features of shape {dset.shape}, expected (n, D)")
            if cfg.feature_dim is not None and rows.shape[1] != cfg.feature_dim:
                raise ValueError(f"{where}: feature dimension {rows.shape[1]} != {cfg.feature_dim}")
            n_feat = lengths[vid]["n_feat"]
            if rows.shape[0] != n_feat:
                raise ValueError(
                    f"{where}: {rows.shape[0]} features after keeping every "
                    f"{cfg.subsample}. row ({dset.shape[0]} rows), {LENGTHS_FILE} says {n_feat}"
                )
            bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
            if bad.size:
                raise ValueError(
                    f"{where}: NaN or infinite values in feature rows {bad[:10].tolist()}"
                )
    return missing


def _plan(
    split: str, segments: list[dict[str, Any]], seconds: Mapping[str, float], cfg
) -> list[dict[str, Any]]:
    """Examples without features: train one per segment, validation/test fixed pairs."""

    def where(s: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": s["id"],
            "location": np.asarray(s["location"], np.int32),
            "seconds_per_feature": np.float32(seconds[s["id"]]),
        }

    if split == "train":
        pairs = [(k, k) for k in range(len(segments))]
    else:
        pairs, skipped = draw_pairs(segments, seed=cfg.pair_seed)
        if skipped:
            logging.warning(
                "%s: %d queries have no other segment of their class with a long enough "
                "reference window; skipped: %s",
                split,
                len(skipped),
                [segments[k]["id"] for k in skipped],
            )
    plan = []
    for q, r in pairs:
        query, ref = where(segments[q]), where(segments[r])
        gt = np.asarray(segments[r]["groundtruth"], np.int32)
        query_gt = np.asarray(segments[q]["groundtruth"], np.int32)
        plan.append(
            {
                "query_id": query["id"],
                "query_location": query["location"][0] + query_gt,
                "query_seconds_per_feature": query["seconds_per_feature"],
                "reference_id": ref["id"],
                "reference_location": ref["location"],
                "reference_seconds_per_feature": ref["seconds_per_feature"],
                "groundtruth": gt,
                "label": segments[r]["label"],
            }
        )
    return plan
