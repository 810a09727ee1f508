"""activitynet_reloc: the video re-localization dataset of Feng et al. (ECCV 2018, Sec. 4).

Build with `tfds build tfds_activitynet_reloc/activitynet_reloc --manual_dir=DIR`
(config `c3d`, the default), `--config=synthetic` or `--config=simulated_c3d` (generated, no
download) or `--config=custom --manual_dir=DIR` (your own annotations and features, any
taxonomy and D).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
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
    CLASS_SPLIT_SEED,
    FRAMES_PER_FEATURE,
    PAIR_SEED,
    RELEASE_PERM,
    SPLITS,
    check_splits,
    draw_pairs,
    leaf_classes,
    reorganize,
)

from . import simulated_c3d, synthetic  # noqa: E402

ANNOTATIONS_FILE = "activity_net.v1-3.min.json"
LENGTHS_FILE = "length.json"
C3D_FEATURES_FILE = "sub_activitynet_v1-3.c3d.hdf5"
FEATURES_FILE = "features.hdf5"  # what `video-reloc-features` writes
FEATURES_INFO_FILE = "features.json"  # beside it: how the features were made
SPLITS_FILE = "splits.json"
MIN_CLASSES = len(SPLITS)

_TFDS_SPLITS = SPLITS


@dataclasses.dataclass(eq=False)
class ActivitynetRelocConfig(tfds.core.BuilderConfig):
    """BuilderConfig of activitynet_reloc.

    Attributes:
        source: `"activitynet"` (ActivityNet v1.3's taxonomy and the release's class split,
            features from the manual HDF5 file), `"custom"` (any taxonomy, the classes of
            `splits.json` or of a seeded permutation, features from either HDF5 layout; see
            `custom_features_layout`), `"synthetic"` or `"simulated_c3d"` (generated).
        features_file: HDF5 file in the manual dir (group `v_<id>` per video).
        feature_name: Dataset name inside each video's group (`None`: its only dataset).
        subsample: Keep every `subsample`-th row of the HDF5 dataset.
        feature_dim: Feature dimension of the schema; the file's dimension must match
            (None: any, schema shape (None, None)).
        frames_per_feature: Video frames per kept feature row.
        pair_seed: Seed of the fixed validation/test pairs.
        synthetic_num_classes: Classes of the synthetic data (split 80/10/10 %).
        synthetic_segments_per_class: Segments per class of the synthetic data.
    """

    source: str = "activitynet"
    features_file: str = C3D_FEATURES_FILE
    feature_name: str | None = "c3d_features"
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
        "1.1.0": "Features stored as raw bytes; configs simulated_c3d and custom.",
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
    Configs `synthetic` and `simulated_c3d` need no download.

    Config `custom` builds your own data; `--manual_dir` holds:
    * `{ANNOTATIONS_FILE}`: annotations in the ActivityNet layout (`taxonomy`, `database`
      with `duration` and `annotations` [{{`segment`: [start, end] seconds, `label`}}]), any
      taxonomy with at least {MIN_CLASSES} leaf classes;
    * `{LENGTHS_FILE}`: `n_frames` and `n_feat` of every video;
    * `{FEATURES_FILE}` as `video-reloc-features` writes it (with `{FEATURES_INFO_FILE}`), or
      `{C3D_FEATURES_FILE}` in the layout of C3D's; any feature dimension;
    * `{SPLITS_FILE}` (optional): `{{"train": [...], "validation": [...], "test": [...]}}`
      class names; without it the classes sorted by name are split 80 / 10 / 10 % by
      `RandomState({CLASS_SPLIT_SEED}).permutation`.
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
        ActivitynetRelocConfig(
            name="custom",
            description=(
                "Your own annotations (ActivityNet layout, any taxonomy) and features (any D) "
                "from --manual_dir."
            ),
            source="custom",
            features_file=FEATURES_FILE,
            feature_name=None,
            subsample=1,
            feature_dim=None,
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "c3d"

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        if cfg.source == "synthetic":
            names = synthetic.class_names(cfg.synthetic_num_classes)
        elif cfg.source == "simulated_c3d":
            names = simulated_c3d.class_names()
        elif cfg.source == "custom":
            names = None  # read from the manual dir
        else:
            names = list(ACTIVITYNET_CLASSES)
        label = tfds.features.ClassLabel(names=names)
        # Raw bytes: a hundred times faster to write than a float list of every value, and
        # what a tensor of two unknown dimensions (config custom: any D) needs.
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
                "label": label,
            }
        )
        return self.dataset_info_from_configs(
            features=features,
            homepage="https://github.com/fengyang0317/video_reloc",
            # `features`: how `video-reloc-features` made the features (config custom).
            metadata=tfds.core.MetadataDict(),
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
        features = self._features_layout(manual_dir)
        for name in (ANNOTATIONS_FILE, LENGTHS_FILE):
            self._require(manual_dir / name)
        annotations_path = manual_dir / ANNOTATIONS_FILE
        annotations = _read_json(annotations_path)
        lengths = _read_json(manual_dir / LENGTHS_FILE)
        perm, splits = RELEASE_PERM, None
        if not isinstance(annotations, dict) or "taxonomy" not in annotations:
            raise ValueError(
                f"{annotations_path}: no 'taxonomy' (annotations in ActivityNet's layout hold a "
                "'taxonomy' and a 'database')"
            )
        try:
            classes = leaf_classes(annotations["taxonomy"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{annotations_path}: {e}") from e
        if cfg.source == "activitynet":
            if tuple(classes) != ACTIVITYNET_CLASSES:
                raise ValueError(
                    f"{annotations_path}: the taxonomy has {len(classes)} leaf classes, not the "
                    "200 of v1.3 (config custom takes any taxonomy)"
                )
        else:
            if len(classes) < MIN_CLASSES:
                raise ValueError(
                    f"{annotations_path}: the taxonomy has {len(classes)} leaf classes; a train, "
                    f"a validation and a test split need at least {MIN_CLASSES}"
                )
            perm = None  # `reorganize`'s seeded permutation, unless splits.json names them
            splits_path = manual_dir / SPLITS_FILE
            if splits_path.exists():
                try:
                    splits = check_splits(_read_json(splits_path), list(classes))
                except ValueError as e:
                    raise ValueError(f"{splits_path}: {e}") from e
            self.info.features["label"].names = list(classes)
            annotations = _without_unmade_videos(annotations, lengths, features)
        try:
            segments = reorganize(
                annotations,
                lengths,
                perm,
                splits=splits,
                frames_per_feature=features.frames_per_feature,
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{annotations_path} / {manual_dir / LENGTHS_FILE}: {e}") from e
        names = {node_id: name for name, node_id in classes.items()}
        seconds = {}
        for segs in segments.values():
            for s in segs:
                video = annotations["database"][s["id"]]
                seconds[s["id"]] = (
                    float(video["duration"])
                    / lengths[s["id"]]["n_frames"]
                    * features.frames_per_feature
                )
                s["label"] = names[s["label"]]

        needed = list(dict.fromkeys(s["id"] for segs in segments.values() for s in segs))
        missing = _check_features(features, needed, lengths, cfg.feature_dim)
        if missing:
            n_seg = sum(s["id"] in missing for segs in segments.values() for s in segs)
            logging.warning(
                "%d of %d videos are not in %s; their %d segments are skipped: %s",
                len(missing),
                len(needed),
                features.path.name,
                n_seg,
                " ".join(sorted(missing)),
            )
        if features.info is not None:
            self.info.metadata["features"] = features.info
        if cfg.source == "custom":
            self.info.metadata["manual_fingerprint"] = manual_fingerprint(manual_dir)
        kept = {
            split: [s for s in segments[split] if s["id"] not in missing] for split in _TFDS_SPLITS
        }
        plans = {split: _plan(split, kept[split], seconds, cfg) for split in _TFDS_SPLITS}
        for split, plan in plans.items():
            if not plan:
                raise ValueError(
                    f"{annotations_path}: split {split!r} has no examples: {len(kept[split])} "
                    f"usable segments (at most 32 features, video in {features.path.name}) of "
                    f"classes {sorted({s['label'] for s in kept[split]})}; a validation or test "
                    "pair needs two segments of a class"
                )
        return {s: self._generate_examples(plans[s], features, None) for s in plans}

    def _require(self, path: pathlib.Path) -> None:
        if not path.exists():
            raise FileNotFoundError(
                f"Manual file {path.name} not found in {path.parent}. Download it there using "
                f"instructions:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )

    def _features_layout(self, manual_dir: pathlib.Path) -> FeaturesLayout:
        """The features file of the manual dir and how to read it."""
        cfg = self.builder_config
        if cfg.source != "custom":
            self._require(manual_dir / cfg.features_file)
            return FeaturesLayout(
                manual_dir / cfg.features_file,
                cfg.feature_name,
                cfg.subsample,
                cfg.frames_per_feature,
            )
        return custom_features_layout(manual_dir)

    def _generate_examples(
        self,
        plan: Sequence[Mapping[str, Any]],
        features: FeaturesLayout | None,
        get_features: Callable[[str], np.ndarray] | None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yields the planned (query, reference) examples, reading the features."""
        h5 = h5py.File(features.path, "r") if features is not None else None
        try:
            if h5 is not None:

                @functools.lru_cache(maxsize=32)
                def get_features(video_id: str) -> np.ndarray:
                    return features.read(h5, video_id).astype(np.float32)

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


@dataclasses.dataclass(frozen=True)
class FeaturesLayout:
    """Where a video's features are in an HDF5 file (group `v_<id>` per video) and what a row is.

    Attributes:
        path: The HDF5 file.
        feature_name: The dataset inside a video's group; `None`: the group's only dataset.
        subsample: Keep every `subsample`-th row.
        frames_per_feature: Video frames per kept row.
        info: How the features were made (`features.json` of `video-reloc-features`), if known.
    """

    path: pathlib.Path
    feature_name: str | None
    subsample: int
    frames_per_feature: int
    info: Mapping[str, Any] | None = None

    def dataset(self, h5: h5py.File, video_id: str) -> h5py.Dataset:
        """The HDF5 dataset of `video_id` (KeyError if absent, ValueError if ambiguous)."""
        group = h5[f"v_{video_id}"]
        if self.feature_name is not None:
            return group[self.feature_name]
        names = list(group)
        if len(names) != 1:
            raise ValueError(f"group v_{video_id} holds {len(names)} datasets {names}, not one")
        return group[names[0]]

    def read(self, h5: h5py.File, video_id: str) -> np.ndarray:
        """The kept rows of `video_id`."""
        return self.dataset(h5, video_id)[()][:: self.subsample]


def custom_features_layout(manual_dir: pathlib.Path) -> FeaturesLayout:
    """The features of config `custom`: `features.hdf5` or the C3D layout, whichever is there.

    `features.hdf5` (of `video-reloc-features`) has one dataset per group, a row per clip, all
    kept; its clip length comes from `features.json` beside it. `sub_activitynet_v1-3.c3d.hdf5`
    is read as config `c3d` reads it (dataset `c3d_features`, every other row, 16 frames a row).
    """
    found = [name for name in (FEATURES_FILE, C3D_FEATURES_FILE) if (manual_dir / name).exists()]
    if not found:
        raise FileNotFoundError(
            f"Manual file {FEATURES_FILE} (or {C3D_FEATURES_FILE}) not found in {manual_dir}; "
            f"make it with video-reloc-features --output={manual_dir}"
        )
    if len(found) > 1:
        raise ValueError(
            f"{manual_dir} holds both {FEATURES_FILE} and {C3D_FEATURES_FILE}; keep only the "
            "one to build"
        )
    if found[0] == C3D_FEATURES_FILE:
        return FeaturesLayout(manual_dir / C3D_FEATURES_FILE, "c3d_features", 2, FRAMES_PER_FEATURE)
    info_path = manual_dir / FEATURES_INFO_FILE
    info = _read_json(info_path) if info_path.exists() else None
    frames_per_feature = FRAMES_PER_FEATURE
    if info is not None:
        try:
            frames_per_feature = int(info["clip_length"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{info_path}: no valid clip_length ({e!r})") from e
    return FeaturesLayout(manual_dir / FEATURES_FILE, None, 1, frames_per_feature, info)


def manual_fingerprint(manual_dir: str | pathlib.Path) -> str:
    """SHA-256 of what config `custom` reads from a manual dir: its JSON files' bytes and its
    features file's name and size (not its bytes: it may hold gigabytes)."""
    manual_dir = pathlib.Path(manual_dir)
    digest = hashlib.sha256()
    for name in (ANNOTATIONS_FILE, LENGTHS_FILE, SPLITS_FILE, FEATURES_INFO_FILE):
        path = manual_dir / name
        digest.update(name.encode() + (path.read_bytes() if path.exists() else b"-"))
    for name in (FEATURES_FILE, C3D_FEATURES_FILE):
        path = manual_dir / name
        digest.update(f"{name} {path.stat().st_size if path.exists() else -1}".encode())
    return digest.hexdigest()


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON (truncated or corrupt?): {e}") from e


def _without_unmade_videos(
    annotations: Mapping[str, Any], lengths: Mapping[str, Any], features: FeaturesLayout
) -> Mapping[str, Any]:
    """The annotations without the videos that have neither a `length.json` entry nor
    features (files `video-reloc-features` could not decode, or never saw); logged and counted.

    A video with features but no length entry stays, and `reorganize` names it.
    """
    database = annotations.get("database")
    if not isinstance(database, Mapping) or not isinstance(lengths, Mapping):
        return annotations  # `reorganize` names what is wrong
    absent = [vid for vid in database if vid not in lengths]
    if not absent:
        return annotations
    try:
        with h5py.File(features.path, "r") as h5:
            unmade = [vid for vid in absent if f"v_{vid}" not in h5]
    except OSError as e:
        raise ValueError(
            f"{features.path}: cannot open as HDF5 (truncated or corrupt?): {e}"
        ) from e
    if not unmade:
        return annotations
    logging.warning(
        "%d of %d annotated videos have neither features in %s nor an entry in %s (files that "
        "could not be decoded?); they are skipped: %s",
        len(unmade),
        len(database),
        features.path.name,
        LENGTHS_FILE,
        " ".join(sorted(unmade)),
    )
    unmade = set(unmade)
    return {
        **annotations,
        "database": {vid: video for vid, video in database.items() if vid not in unmade},
    }


def _check_features(
    features: FeaturesLayout,
    video_ids: Sequence[str],
    lengths: Mapping[str, Any],
    feature_dim: int | None,
) -> set[str]:
    """Reads every needed video once; returns the missing ones, raises on bad ones.

    Every video must have `feature_dim` columns (`None`: the first video's; all alike).
    """
    path = features.path
    missing = set()
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: cannot open as HDF5 (truncated or corrupt?): {e}") from e
    first = None
    with h5:
        for vid in video_ids:
            if f"v_{vid}" not in h5:
                missing.add(vid)
                continue
            where = f"{path}: video {vid}"
            try:
                dset = features.dataset(h5, vid)
                rows = dset[()][:: features.subsample]
            except (KeyError, OSError, TypeError, ValueError) as e:
                raise ValueError(f"{where}: cannot read its features: {e}") from e
            if rows.ndim != 2:
                raise ValueError(f"{where}: features of shape {dset.shape}, expected (n, D)")
            if feature_dim is None and first is None:
                feature_dim, first = rows.shape[1], vid
            if rows.shape[1] != feature_dim:
                of = f" (video {first}'s)" if first is not None else ""
                raise ValueError(f"{where}: feature dimension {rows.shape[1]} != {feature_dim}{of}")
            n_feat = lengths[vid]["n_feat"]
            if rows.shape[0] != n_feat:
                raise ValueError(
                    f"{where}: {rows.shape[0]} features after keeping every "
                    f"{features.subsample}. row ({dset.shape[0]} rows), {LENGTHS_FILE} says "
                    f"{n_feat}"
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
