"""Rules that turn ActivityNet into the video re-localization dataset (paper Sec. 4).

This module reproduces, as pure Python + numpy, the dataset construction of the
original release (`fengyang0317/video_reloc`, `create_dataset.py`): it needs only
the ActivityNet annotations, the per-video frame and feature counts
(`length.json`) and the class permutation (`perm.npy`); no features, no
TensorFlow. It also holds the seeded drawing of the fixed (query, reference)
pairs of the validation and test splits.

Rules, per video (in the order of the annotation file's `database`):

1. Annotations are sorted by start time (stable sort).
2. Overlap scan: for each annotation `i` and each later `j` that starts no later
   than `i` ends, a same-label `j` is merged into `i` (`i`'s end extended in place,
   `j` removed afterwards); a different-label overlap drops the whole video.
3. Seconds to feature indices: `start = int(n_frames * t / duration // 16)`,
   `end = min(n_feat, int(n_frames * t / duration // 16) + 1)`.
4. Segments of the split's classes whose ground truth is empty or longer than
   32 features are skipped.
5. The reference window extends to the nearest same-label segments on each side
   (the end of the previous one, the start of the next one), or to the video's
   ends.
6. A window longer than 300 features is cut to 300 features at a random start
   (numpy `RandomState(0)`, one draw per cut window, drawn in the order
   train, validation, test) such that it holds the whole ground truth.
7. Classes: the leaves of the taxonomy, sorted by name; a permutation `perm` of
   them gives the first 80 % to training, the next 10 % to validation and the rest
   to test (`split_classes`): with ActivityNet's 200 classes and the release's
   `perm`, `perm[:160]`, `perm[160:180]` and `perm[180:]`. Other data name their
   split classes (`check_splits`) or take the seeded permutation of
   `class_permutation`. Every annotation's label must be a leaf class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""Split names, in the order their crops are drawn (`validation` is the release's `val`)."""

RELEASE_FILE_NAMES: dict[str, str] = {
    "train": "train.json",
    "validation": "val.json",
    "test": "test.json",
}
"""The original release's JSON file of each split."""

# `data/perm.npy` of the original release: a permutation of the 200 leaf classes
# sorted by name. First 160 train, next 20 validation, last 20 test.
RELEASE_PERM: tuple[int, ...] = (
    0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 17, 18, 19,
    20, 23, 24, 25, 26, 28, 29, 30, 32, 33, 34, 35, 38, 39, 40, 41,
    43, 44, 45, 46, 47, 48, 49, 50, 51, 53, 54, 55, 56, 57, 58, 59,
    60, 61, 62, 63, 64, 65, 67, 68, 69, 70, 71, 72, 73, 76, 77, 79,
    80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 92, 93, 94, 96, 97,
    98, 99, 100, 101, 103, 104, 105, 106, 108, 109, 110, 111, 114, 115, 116, 117,
    118, 119, 120, 121, 122, 123, 124, 125, 126, 129, 130, 131, 134, 135, 137, 138,
    139, 141, 142, 143, 144, 145, 147, 148, 149, 150, 151, 153, 154, 156, 157, 158,
    159, 160, 162, 163, 164, 165, 166, 169, 170, 172, 173, 174, 175, 176, 177, 178,
    179, 180, 181, 182, 183, 184, 186, 189, 191, 192, 193, 194, 196, 197, 198, 199,
    6, 16, 27, 36, 37, 42, 74, 78, 95, 107, 112, 113, 133, 136, 168, 171,
    185, 187, 188, 195, 4, 15, 21, 22, 31, 52, 66, 75, 91, 102, 127, 128,
    132, 140, 146, 152, 155, 161, 167, 190,
)  # fmt: skip

# The 200 leaf classes of the ActivityNet v1.3 taxonomy, sorted by name (the order
# `perm` indexes and the `label` names of the c3d config).
ACTIVITYNET_CLASSES: tuple[str, ...] = (
    "Applying sunscreen",
    "Archery",
    "Arm wrestling",
    "Assembling bicycle",
    "BMX",
    "Baking cookies",
    "Ballet",
    "Bathing dog",
    "Baton twirling",
    "Beach soccer",
    "Beer pong",
    "Belly dance",
    "Blow-drying hair",
    "Blowing leaves",
    "Braiding hair",
    "Breakdancing",
    "Brushing hair",
    "Brushing teeth",
    "Building sandcastles",
    "Bullfighting",
    "Bungee jumping",
    "Calf roping",
    "Camel ride",
    "Canoeing",
    "Capoeira",
    "Carving jack-o-lanterns",
    "Changing car wheel",
    "Cheerleading",
    "Chopping wood",
    "Clean and jerk",
    "Cleaning shoes",
    "Cleaning sink",
    "Cleaning windows",
    "Clipping cat claws",
    "Cricket",
    "Croquet",
    "Cumbia",
    "Curling",
    "Cutting the grass",
    "Decorating the Christmas tree",
    "Disc dog",
    "Discus throw",
    "Dodgeball",
    "Doing a powerbomb",
    "Doing crunches",
    "Doing fencing",
    "Doing karate",
    "Doing kickboxing",
    "Doing motocross",
    "Doing nails",
    "Doing step aerobics",
    "Drinking beer",
    "Drinking coffee",
    "Drum corps",
    "Elliptical trainer",
    "Fixing bicycle",
    "Fixing the roof",
    "Fun sliding down",
    "Futsal",
    "Gargling mouthwash",
    "Getting a haircut",
    "Getting a piercing",
    "Getting a tattoo",
    "Grooming dog",
    "Grooming horse",
    "Hammer throw",
    "Hand car wash",
    "Hand washing clothes",
    "Hanging wallpaper",
    "Having an ice cream",
    "High jump",
    "Hitting a pinata",
    "Hopscotch",
    "Horseback riding",
    "Hula hoop",
    "Hurling",
    "Ice fishing",
    "Installing carpet",
    "Ironing clothes",
    "Javelin throw",
    "Kayaking",
    "Kite flying",
    "Kneeling",
    "Knitting",
    "Laying tile",
    "Layup drill in basketball",
    "Long jump",
    "Longboarding",
    "Making a cake",
    "Making a lemonade",
    "Making a sandwich",
    "Making an omelette",
    "Mixing drinks",
    "Mooping floor",
    "Mowing the lawn",
    "Paintball",
    "Painting",
    "Painting fence",
    "Painting furniture",
    "Peeling potatoes",
    "Ping-pong",
    "Plastering",
    "Plataform diving",
    "Playing accordion",
    "Playing badminton",
    "Playing bagpipes",
    "Playing beach volleyball",
    "Playing blackjack",
    "Playing congas",
    "Playing drums",
    "Playing field hockey",
    "Playing flauta",
    "Playing guitarra",
    "Playing harmonica",
    "Playing ice hockey",
    "Playing kickball",
    "Playing lacrosse",
    "Playing piano",
    "Playing polo",
    "Playing pool",
    "Playing racquetball",
    "Playing rubik cube",
    "Playing saxophone",
    "Playing squash",
    "Playing ten pins",
    "Playing violin",
    "Playing water polo",
    "Pole vault",
    "Polishing forniture",
    "Polishing shoes",
    "Powerbocking",
    "Preparing pasta",
    "Preparing salad",
    "Putting in contact lenses",
    "Putting on makeup",
    "Putting on shoes",
    "Rafting",
    "Raking leaves",
    "Removing curlers",
    "Removing ice from car",
    "Riding bumper cars",
    "River tubing",
    "Rock climbing",
    "Rock-paper-scissors",
    "Rollerblading",
    "Roof shingle removal",
    "Rope skipping",
    "Running a marathon",
    "Sailing",
    "Scuba diving",
    "Sharpening knives",
    "Shaving",
    "Shaving legs",
    "Shot put",
    "Shoveling snow",
    "Shuffleboard",
    "Skateboarding",
    "Skiing",
    "Slacklining",
    "Smoking a cigarette",
    "Smoking hookah",
    "Snatch",
    "Snow tubing",
    "Snowboarding",
    "Spinning",
    "Spread mulch",
    "Springboard diving",
    "Starting a campfire",
    "Sumo",
    "Surfing",
    "Swimming",
    "Swinging at the playground",
    "Table soccer",
    "Tai chi",
    "Tango",
    "Tennis serve with ball bouncing",
    "Throwing darts",
    "Trimming branches or hedges",
    "Triple jump",
    "Tug of war",
    "Tumbling",
    "Using parallel bars",
    "Using the balance beam",
    "Using the monkey bar",
    "Using the pommel horse",
    "Using the rowing machine",
    "Using uneven bars",
    "Vacuuming floor",
    "Volleyball",
    "Wakeboarding",
    "Walking the dog",
    "Washing dishes",
    "Washing face",
    "Washing hands",
    "Waterskiing",
    "Waxing skis",
    "Welding",
    "Windsurfing",
    "Wrapping presents",
    "Zumba",
)

MAX_LENGTH = 300
"""Longest reference window, in features."""
MAX_GROUNDTRUTH = 32
"""Longest ground-truth segment, in features (512 frames)."""
FRAMES_PER_FEATURE = 16
"""Video frames per feature row (C3D rows every 8 frames, every other row kept)."""
CROP_SEED = 0
"""Seed of the `RandomState` drawing the 300-feature crops (the release's `np.random.seed(0)`)."""
PAIR_SEED = 6
"""Seed of the fixed validation/test pairs (the release's evaluation sampler used op seed 6)."""
CLASS_SPLIT_SEED = 0
"""Seed of `class_permutation`, the class split of data that name none."""

Segment = dict[str, Any]
"""One item of a release JSON file: `id`, `label` (taxonomy nodeId), `location`, `groundtruth`."""


def leaf_classes(taxonomy: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Returns the taxonomy's leaf classes.

    A leaf is a node whose name is not the name of any node's parent.

    Args:
        taxonomy: The `taxonomy` list of an ActivityNet annotation file (dicts with
            `nodeName`, `nodeId`, `parentId`).

    Returns:
        A dict from class name to taxonomy nodeId, sorted by name.

    Raises:
        ValueError: If a node misses a field or names an unknown parent.
    """
    names: dict[int, str] = {}
    classes: dict[str, int] = {}
    for node in taxonomy:
        try:
            classes[node["nodeName"]] = node["nodeId"]
            names[node["nodeId"]] = node["nodeName"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"taxonomy node {node!r} lacks nodeName/nodeId") from e
    for node in taxonomy:
        parent = node.get("parentId")
        if parent is None:
            continue
        if parent not in names:
            raise ValueError(f"taxonomy node {node['nodeName']!r} has unknown parentId {parent}")
        classes.pop(names[parent], None)
    return dict(sorted(classes.items()))


def class_permutation(num_classes: int, seed: int = CLASS_SPLIT_SEED) -> list[int]:
    """The class split of data that name none: `RandomState(seed).permutation(num_classes)`.

    It indexes the classes sorted by name, as `split_classes` reads it.
    """
    return np.random.RandomState(seed).permutation(num_classes).tolist()


def split_classes(class_names: Sequence[str], perm: Sequence[int]) -> dict[str, list[str]]:
    """Splits classes by a permutation: 80 % train, 10 % validation, the rest test.

    With 200 classes this is the paper's 160 / 20 / 20 split. Validation and test get at
    least one class each, so any 3 or more classes make three non-empty splits (3 classes:
    1 / 1 / 1; 10: 8 / 1 / 1).

    Args:
        class_names: Class names; they are sorted here.
        perm: A permutation of `range(len(class_names))`, indices into the sorted names.

    Returns:
        A dict from split name to the sorted names of its classes.

    Raises:
        ValueError: If `perm` is not a permutation of the class indices.
    """
    names = sorted(class_names)
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(len(names))):
        raise ValueError(
            f"perm must be a permutation of range({len(names)}) (one index per leaf class), "
            f"got {len(perm)} values"
        )
    if len(names) < len(SPLITS):
        raise ValueError(f"need at least {len(SPLITS)} classes, one per split, got {len(names)}")
    n_val = max(1, round(0.1 * len(names)))
    n_train = min(round(0.8 * len(names)), len(names) - n_val - 1)
    parts = {
        "train": perm[:n_train],
        "validation": perm[n_train : n_train + n_val],
        "test": perm[n_train + n_val :],
    }
    return {split: sorted(names[i] for i in idx) for split, idx in parts.items()}


def check_splits(splits: Any, class_names: Sequence[str]) -> dict[str, list[str]]:
    """Checks a class split given by name (`splits.json`): three disjoint lists of known classes.

    Args:
        splits: `{"train": [names], "validation": [...], "test": [...]}`, parsed JSON.
        class_names: The leaf classes of the taxonomy.

    Returns:
        A dict from split name to the sorted names of its classes. Classes in no split are
        not used.

    Raises:
        ValueError: If a split is missing, empty or unknown, a name is not a leaf class, or a
            class is in two splits; the message names the split and the class.
    """
    if not isinstance(splits, Mapping):
        raise ValueError(
            f"expected an object with keys {list(SPLITS)}, got {type(splits).__name__}"
        )
    unknown_splits = sorted(set(splits) - set(SPLITS))
    if unknown_splits:
        raise ValueError(f"unknown split(s) {unknown_splits}; the splits are {list(SPLITS)}")
    known = set(class_names)
    seen: dict[str, str] = {}
    result = {}
    for split in SPLITS:
        names = splits.get(split)
        if not isinstance(names, list) or not names:
            raise ValueError(
                f"split {split!r} needs a non-empty list of class names, got {names!r}"
            )
        for name in names:
            if name not in known:
                raise ValueError(
                    f"split {split!r}: class {name!r} is not a leaf class of the taxonomy"
                )
            if name in seen:
                raise ValueError(f"class {name!r} is in two splits: {seen[name]!r} and {split!r}")
            seen[name] = split
        result[split] = sorted(names)
    return result


def start_location(n_frames: int, duration: float, seconds: float, fpf: int = 16) -> int:
    """Feature index holding the frame at `seconds` (start of a segment)."""
    return int((n_frames * seconds / duration) // fpf)


def end_location(n_frames: int, n_feat: int, duration: float, seconds: float, fpf: int = 16) -> int:
    """Exclusive feature index that ends a segment ending at `seconds`."""
    return min(n_feat, int((n_frames * seconds / duration) // fpf) + 1)


def merge_annotations(annotations: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """Sorts a video's annotations and merges overlapping same-label ones.

    Reproduces the release's scan exactly: a merged annotation's extended end is
    used for the later comparisons of the same outer step, and annotations marked
    for removal are still visited as outer steps before they are removed.

    Args:
        annotations: The video's `annotations` (`segment` [start, end] in seconds, `label`).

    Returns:
        The kept annotations (copies, `segment` as a list), sorted by start, or None
        if two overlapping annotations have different labels (the video is dropped).
    """
    annos = [{"segment": list(a["segment"]), "label": a["label"]} for a in annotations]
    annos.sort(key=lambda a: a["segment"][0])
    removed: set[int] = set()
    for i in range(len(annos)):
        for j in range(i + 1, len(annos)):
            if annos[j]["segment"][0] > annos[i]["segment"][1]:
                break
            if annos[i]["label"] != annos[j]["label"]:
                return None
            removed.add(j)
            if annos[i]["segment"][1] < annos[j]["segment"][1]:
                annos[i]["segment"][1] = annos[j]["segment"][1]
    return [a for k, a in enumerate(annos) if k not in removed]


def _video_length(lengths: Mapping[str, Any], video_id: str) -> tuple[int, int]:
    try:
        entry = lengths[video_id]
        n_frames, n_feat = int(entry["n_frames"]), int(entry["n_feat"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"video {video_id}: no valid n_frames/n_feat entry in the lengths") from e
    if n_frames <= 0 or n_feat <= 0:
        raise ValueError(f"video {video_id}: n_frames={n_frames}, n_feat={n_feat} must be positive")
    return n_frames, n_feat


def _video_segments(
    video_id: str,
    video: Mapping[str, Any],
    lengths: Mapping[str, Any],
    label_ids: Mapping[str, int],
    rng: np.random.RandomState,
    max_length: int,
    max_groundtruth: int,
    fpf: int,
) -> list[Segment]:
    """Applies rules 1-6 to one video; `label_ids` holds the split's classes only."""
    try:
        duration = float(video["duration"])
        raw = video["annotations"]
        annos = merge_annotations(raw)
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"video {video_id}: malformed annotation entry ({e!r})") from e
    if annos is None or not any(a["label"] in label_ids for a in annos):
        return []
    if not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"video {video_id}: duration {duration} must be positive")
    n_frames, n_feat = _video_length(lengths, video_id)

    def start(t: float) -> int:
        return start_location(n_frames, duration, t, fpf)

    def end(t: float) -> int:
        return end_location(n_frames, n_feat, duration, t, fpf)

    items = []
    for i, anno in enumerate(annos):
        if anno["label"] not in label_ids:
            continue
        gt_start, gt_end = start(anno["segment"][0]), end(anno["segment"][1])
        if gt_end - gt_start > max_groundtruth or gt_start >= gt_end:
            continue
        ind_s = i
        while ind_s > 0 and annos[ind_s - 1]["label"] != anno["label"]:
            ind_s -= 1
        ind_e = i
        while ind_e + 1 < len(annos) and annos[ind_e + 1]["label"] != anno["label"]:
            ind_e += 1
        seg_start = start(0 if ind_s == 0 else annos[ind_s - 1]["segment"][1])
        seg_end = end(duration if ind_e + 1 == len(annos) else annos[ind_e + 1]["segment"][0])
        if not seg_start <= gt_start < gt_end <= seg_end:
            raise ValueError(
                f"video {video_id}: ground truth [{gt_start}, {gt_end}) outside its window "
                f"[{seg_start}, {seg_end}) (segment extends past the video's duration?)"
            )
        if seg_end - seg_start > max_length:
            low = max(gt_end - max_length, seg_start)
            high = min(gt_start, seg_end - max_length) + 1
            seg_start = int(rng.randint(low, high))
            seg_end = seg_start + max_length
        items.append(
            {
                "id": video_id,
                "label": label_ids[anno["label"]],
                "location": [seg_start, seg_end],
                "groundtruth": [gt_start - seg_start, gt_end - seg_start],
            }
        )
    return items


def reorganize(
    annotations: Mapping[str, Any],
    lengths: Mapping[str, Any],
    perm: Sequence[int] | None = RELEASE_PERM,
    *,
    splits: Mapping[str, Sequence[str]] | None = None,
    max_length: int = MAX_LENGTH,
    max_groundtruth: int = MAX_GROUNDTRUTH,
    frames_per_feature: int = FRAMES_PER_FEATURE,
    seed: int = CROP_SEED,
) -> dict[str, list[Segment]]:
    """Builds the video re-localization segments of every split from ActivityNet.

    Args:
        annotations: A parsed ActivityNet annotation file (`taxonomy`, `database`).
        lengths: A parsed `length.json`: video id -> {`n_frames`, `n_feat`}.
        perm: Permutation of the leaf classes sorted by name (the release's by default);
            `None`: `class_permutation` of their number. Unused when `splits` is given.
        splits: The classes of each split by name (see `check_splits`), instead of `perm`.
        max_length: Longest reference window, in features; longer ones are cut.
        max_groundtruth: Longest ground truth, in features; longer segments are skipped.
        frames_per_feature: Video frames per feature row.
        seed: Seed of the `RandomState` drawing the crops (train, then validation, then test).

    Returns:
        A dict from split name (`train`, `validation`, `test`) to its segments, each a
        dict like the release's JSON items: `id` (YouTube id), `label` (taxonomy nodeId),
        `location` ([start, end) of the reference window in features of the whole
        video) and `groundtruth` ([start, end) relative to `location`). Videos appear
        in the order of `annotations["database"]`, segments by start time.

    Raises:
        ValueError: On malformed annotations or lengths, or a label that is not a leaf
            class; the message names the video.
    """
    if not isinstance(annotations, Mapping) or not {"taxonomy", "database"} <= set(annotations):
        raise ValueError("annotations need a 'taxonomy' and a 'database'")
    classes = leaf_classes(annotations["taxonomy"])
    if not isinstance(annotations["database"], Mapping):
        raise ValueError("'database' must map video ids to videos")
    _check_annotations(annotations["database"], classes)
    if splits is not None:
        split_names = check_splits(splits, list(classes))
    else:
        split_names = split_classes(
            list(classes), class_permutation(len(classes)) if perm is None else perm
        )
    rng = np.random.RandomState(seed)
    result: dict[str, list[Segment]] = {}
    for split in SPLITS:
        label_ids = {name: classes[name] for name in split_names[split]}
        items: list[Segment] = []
        for video_id, video in annotations["database"].items():
            items.extend(
                _video_segments(
                    video_id,
                    video,
                    lengths,
                    label_ids,
                    rng,
                    max_length,
                    max_groundtruth,
                    frames_per_feature,
                )
            )
        result[split] = items
    return result


def _check_annotations(database: Mapping[str, Any], classes: Mapping[str, int]) -> None:
    """Raises unless every annotation of every video is a `segment` [start, end] of finite
    seconds labelled with a leaf class (a segment whose end is not after its start is
    skipped later, as the release skips it)."""
    for video_id, video in database.items():
        try:
            annotations = [(a["segment"], a["label"]) for a in video["annotations"]]
        except (KeyError, TypeError) as e:
            raise ValueError(f"video {video_id}: malformed annotation entry ({e!r})") from e
        for k, (segment, label) in enumerate(annotations):
            if not (
                isinstance(segment, list | tuple)
                and len(segment) == 2
                and all(
                    isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t)
                    for t in segment
                )
            ):
                raise ValueError(
                    f"video {video_id}: annotation {k}: segment {segment!r} is not "
                    "[start, end] in seconds"
                )
            if not isinstance(label, str) or label not in classes:
                raise ValueError(
                    f"video {video_id}: label {label!r} is not a leaf class of the taxonomy"
                )


def draw_pairs(
    segments: Sequence[Mapping[str, Any]], seed: int = PAIR_SEED
) -> tuple[list[tuple[int, int]], list[int]]:
    """Draws the fixed (query, reference) pairs of an evaluation split.

    For each segment in order (the query), one other segment of the same label
    whose reference window is at least as long as the query's ground truth is
    drawn uniformly with `np.random.RandomState(seed)` (candidates in segment order,
    one `randint` per query that has candidates).

    Args:
        segments: The split's segments (`label`, `location`, `groundtruth`).
        seed: Seed of the draw.

    Returns:
        `(pairs, skipped)`: `pairs` lists (query index, reference index) into
        `segments`; `skipped` lists the query indices that had no candidate.
    """
    by_label: dict[Any, list[int]] = {}
    for k, seg in enumerate(segments):
        by_label.setdefault(seg["label"], []).append(k)
    rng = np.random.RandomState(seed)
    pairs: list[tuple[int, int]] = []
    skipped: list[int] = []
    for q, query in enumerate(segments):
        need = query["groundtruth"][1] - query["groundtruth"][0]
        candidates = [
            r
            for r in by_label[query["label"]]
            if r != q and segments[r]["location"][1] - segments[r]["location"][0] >= need
        ]
        if not candidates:
            skipped.append(q)
            continue
        pairs.append((q, candidates[rng.randint(len(candidates))]))
    return pairs, skipped
