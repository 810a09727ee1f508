"""Tests of the dataset rules (`tfds_activitynet_reloc.reorganize`) and the synthetic generator."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from tfds_activitynet_reloc.activitynet_reloc import synthetic
from tfds_activitynet_reloc.reorganize import (
    ACTIVITYNET_CLASSES,
    RELEASE_FILE_NAMES,
    RELEASE_PERM,
    check_splits,
    class_permutation,
    draw_pairs,
    end_location,
    leaf_classes,
    merge_annotations,
    reorganize,
    split_classes,
    start_location,
)

TAXONOMY = [
    {"nodeName": "Root", "nodeId": 0, "parentId": None, "parentName": None},
    {"nodeName": "Sports", "nodeId": 1, "parentId": 0, "parentName": "Root"},
] + [
    {"nodeName": f"class{c:02d}", "nodeId": 100 + c, "parentId": 1, "parentName": "Sports"}
    for c in range(10)
]
PERM = list(range(10))  # class00-07 train, class08 validation, class09 test


def _anno(start, end, label):
    return {"segment": [start, end], "label": label}


@pytest.fixture(scope="module")
def reference(reference_dir):
    annotations = json.loads(
        (reference_dir / "activitynet" / "activity_net.v1-3.reconstructed.json").read_text()
    )
    release = reference_dir / "video_reloc_release"
    lengths = json.loads((release / "length.json").read_text())
    perm = np.load(release / "perm.npy")
    released = {s: json.loads((release / f).read_text()) for s, f in RELEASE_FILE_NAMES.items()}
    return annotations, lengths, perm, released


def _in_video(item):
    return (
        item["id"],
        item["location"][0] + item["groundtruth"][0],
        item["location"][0] + item["groundtruth"][1],
    )


def test_parity_with_release(reference):
    annotations, lengths, perm, released = reference
    assert tuple(perm.tolist()) == RELEASE_PERM
    ours = reorganize(annotations, lengths, perm)
    uncut = reorganize(annotations, lengths, perm, max_length=10**9)
    assert {s: len(v) for s, v in ours.items()} == {"train": 7593, "validation": 829, "test": 978}
    n_identical = {}
    for split, items in released.items():
        mine = {_in_video(x): x for x in ours[split]}
        full = {_in_video(x): x for x in uncut[split]}
        assert len(mine) == len(items) == len(full)  # (video, ground truth) is a unique key
        n_identical[split] = 0
        for item in items:
            key = _in_video(item)
            assert key in mine, key
            if full[key]["location"][1] - full[key]["location"][0] <= 300:
                assert mine[key] == item
                n_identical[split] += 1
            else:
                gt0, gt1 = item["groundtruth"]
                assert mine[key]["label"] == item["label"]
                assert mine[key]["groundtruth"][1] - mine[key]["groundtruth"][0] == gt1 - gt0
                for x in (mine[key], item):
                    assert x["location"][1] - x["location"][0] == 300
                    assert 0 <= x["groundtruth"][0] < x["groundtruth"][1] <= 300
    assert n_identical == {"train": 7488, "validation": 809, "test": 962}


def test_reorganize_is_deterministic(reference):
    annotations, lengths, perm, _ = reference
    assert reorganize(annotations, lengths, perm) == reorganize(annotations, lengths, perm)


def test_leaf_classes_of_activitynet(reference):
    classes = leaf_classes(reference[0]["taxonomy"])
    assert tuple(classes) == ACTIVITYNET_CLASSES
    assert len(classes) == 200 and classes["Archery"] == 250


def test_split_classes():
    split = split_classes(ACTIVITYNET_CLASSES, RELEASE_PERM)
    assert [len(split[s]) for s in ("train", "validation", "test")] == [160, 20, 20]
    assert set().union(*split.values()) == set(ACTIVITYNET_CLASSES)
    assert split["test"] == sorted(ACTIVITYNET_CLASSES[i] for i in RELEASE_PERM[180:])
    assert split["validation"] == sorted(ACTIVITYNET_CLASSES[i] for i in RELEASE_PERM[160:180])
    with pytest.raises(ValueError, match="permutation"):
        split_classes(ACTIVITYNET_CLASSES, RELEASE_PERM[:199])


def test_split_classes_gives_every_split_a_class():
    sizes = {3: [1, 1, 1], 4: [2, 1, 1], 10: [8, 1, 1], 15: [12, 2, 1], 200: [160, 20, 20]}
    for n, expected in sizes.items():
        split = split_classes([f"c{k:03d}" for k in range(n)], range(n))
        assert [len(split[s]) for s in ("train", "validation", "test")] == expected
    with pytest.raises(ValueError, match="at least 3 classes"):
        split_classes(["a", "b"], [0, 1])


def test_class_permutation_is_seeded():
    assert class_permutation(5) == [2, 0, 1, 3, 4]  # RandomState(0); documented
    assert class_permutation(5) == class_permutation(5) != class_permutation(5, seed=1)
    assert sorted(class_permutation(200)) == list(range(200))


def test_check_splits():
    names = ["a", "b", "c", "d"]
    assert check_splits({"train": ["b", "a"], "validation": ["c"], "test": ["d"]}, names) == {
        "train": ["a", "b"],
        "validation": ["c"],
        "test": ["d"],
    }
    bad = [
        ({"train": ["a"], "validation": ["a"], "test": ["d"]}, "'a' is in two splits"),
        ({"train": ["a"], "validation": ["x"], "test": ["d"]}, "class 'x' is not a leaf"),
        ({"train": ["a"], "validation": [], "test": ["d"]}, "'validation' needs a non-empty"),
        ({"train": ["a"], "validation": ["b"], "test": ["d"], "dev": []}, "unknown split"),
        (["a", "b"], "expected an object"),
    ]
    for splits, message in bad:
        with pytest.raises(ValueError, match=message):
            check_splits(splits, names)


def test_reorganize_by_named_splits_and_unknown_labels():
    database = {
        "vid": {
            "duration": 160.0,
            "annotations": [_anno(10, 20, "class00"), _anno(100, 110, "class02")],
        }
    }
    lengths = {"vid": {"n_frames": 2560, "n_feat": 160}}
    annotations = {"taxonomy": TAXONOMY, "database": database}
    splits = {"train": ["class02"], "validation": ["class00"], "test": ["class01"]}
    out = reorganize(annotations, lengths, splits=splits)
    assert [x["label"] for x in out["train"]] == [102]
    assert [x["label"] for x in out["validation"]] == [100] and out["test"] == []
    database["vid"]["annotations"].append(_anno(130, 140, "Class00"))
    with pytest.raises(ValueError, match="video vid: label 'Class00' is not a leaf class"):
        reorganize(annotations, lengths, splits=splits)


@pytest.mark.parametrize(
    "segment", [[3.0], "a", [1.0, "2"], [float("nan"), 4.0], [True, 4.0], None]
)
def test_a_malformed_segment_is_named_with_its_video(segment):
    database = {
        "vid": {"duration": 160.0, "annotations": [_anno(10, 20, "class00")]},
        "other": {
            "duration": 160.0,
            "annotations": [_anno(10, 20, "class01"), {"segment": segment, "label": "class01"}],
        },
    }
    lengths = {v: {"n_frames": 2560, "n_feat": 160} for v in database}
    with pytest.raises(ValueError, match=r"video other: annotation 1: segment .* is not \[start"):
        _tiny(database, lengths)


def test_locations():
    # 100 s, 2500 frames: 25 frames a second, a feature every 16 frames, 156 features.
    assert start_location(2500, 100.0, 10.0) == 15  # frame 250
    assert end_location(2500, 156, 100.0, 10.0) == 16
    assert end_location(2500, 156, 100.0, 100.0) == 156  # clipped to n_feat


def test_merge_same_label_extends_in_place():
    annos = [_anno(15, 25, "a"), _anno(0, 10, "a"), _anno(5, 20, "a"), _anno(40, 50, "a")]
    assert merge_annotations(annos) == [_anno(0, 25, "a"), _anno(40, 50, "a")]
    assert annos[0]["segment"] == [15, 25]  # the input is not modified


def test_merge_drops_video_with_different_label_overlap():
    assert merge_annotations([_anno(0, 10, "a"), _anno(9, 12, "b")]) is None
    # Touching (start == end) counts as overlapping; a gap does not.
    assert merge_annotations([_anno(0, 10, "a"), _anno(10, 12, "b")]) is None
    assert merge_annotations([_anno(0, 10, "a"), _anno(10.5, 12, "b")]) == [
        _anno(0, 10, "a"),
        _anno(10.5, 12, "b"),
    ]


def _tiny(database, lengths):
    return reorganize({"taxonomy": TAXONOMY, "database": database}, lengths, PERM)


def test_context_reaches_to_same_label_neighbours():
    # 160 s, 2560 frames (16 fps): one feature a second, 160 features.
    database = {
        "vid": {
            "duration": 160.0,
            "annotations": [
                _anno(10, 20, "class00"),
                _anno(30, 40, "class01"),
                _anno(50, 60, "class00"),
                _anno(100, 110, "class02"),
            ],
        }
    }
    out = _tiny(database, {"vid": {"n_frames": 2560, "n_feat": 160}})
    assert out["validation"] == out["test"] == []
    assert out["train"] == [
        {"id": "vid", "label": 100, "location": [0, 51], "groundtruth": [10, 21]},
        {"id": "vid", "label": 101, "location": [0, 160], "groundtruth": [30, 41]},
        {"id": "vid", "label": 100, "location": [20, 160], "groundtruth": [30, 41]},
        {"id": "vid", "label": 102, "location": [0, 160], "groundtruth": [100, 111]},
    ]


def test_long_ground_truth_skipped_and_long_window_cut():
    database = {
        "long_gt": {"duration": 100.0, "annotations": [_anno(10, 50, "class00")]},
        "long_win": {"duration": 1000.0, "annotations": [_anno(500, 520, "class08")]},
    }
    lengths = {
        "long_gt": {"n_frames": 1600, "n_feat": 100},
        "long_win": {"n_frames": 16000, "n_feat": 1000},
    }
    out = _tiny(database, lengths)
    assert out["train"] == []  # 41 features > 32
    (item,) = out["validation"]
    loc, gt = item["location"], item["groundtruth"]
    assert loc[1] - loc[0] == 300
    assert [loc[0] + gt[0], loc[0] + gt[1]] == [500, 521]
    assert 0 <= gt[0] < gt[1] <= 300
    cuts = {
        tuple(
            reorganize({"taxonomy": TAXONOMY, "database": database}, lengths, PERM, seed=s)[
                "validation"
            ][0]["location"]
        )
        for s in range(5)
    }
    assert len(cuts) > 1  # the crop is drawn


def test_bad_lengths_name_the_video():
    database = {"vidX": {"duration": 100.0, "annotations": [_anno(10, 20, "class00")]}}
    with pytest.raises(ValueError, match="vidX"):
        _tiny(database, {})
    with pytest.raises(ValueError, match="vidX"):
        _tiny(
            {"vidX": {"annotations": [_anno(1, 2, "class00")]}},
            {"vidX": {"n_frames": 1, "n_feat": 1}},
        )


def _segments(spec):
    return [
        {"id": f"v{k}", "label": label, "location": [0, win], "groundtruth": [0, gt]}
        for k, (label, win, gt) in enumerate(spec)
    ]


def test_draw_pairs():
    segs = _segments(
        [("a", 10, 5), ("a", 4, 4), ("a", 30, 20), ("b", 40, 3), ("b", 40, 3), ("c", 9, 2)]
    )
    pairs, skipped = draw_pairs(segs, seed=1)
    assert draw_pairs(segs, seed=1) == (pairs, skipped)
    assert skipped == [2, 5]  # no other "a" window >= 20; "c" has no other segment
    assert [q for q, _ in pairs] == [0, 1, 3, 4]
    for q, r in pairs:
        assert q != r and segs[q]["label"] == segs[r]["label"]
        assert segs[r]["location"][1] >= segs[q]["groundtruth"][1]
    assert dict(pairs)[3] == 4 and dict(pairs)[4] == 3
    draws = {tuple(draw_pairs(segs, seed=s)[0]) for s in range(20)}
    assert len(draws) > 1


def test_synthetic_structure_and_determinism():
    start = time.perf_counter()
    data = synthetic.generate()
    assert time.perf_counter() - start < 30
    assert {s: len(v) for s, v in data.segments.items()} == {
        "train": 1600,
        "validation": 200,
        "test": 200,
    }
    labels = {s: {x["label"] for x in v} for s, v in data.segments.items()}
    assert [len(labels[s]) for s in ("train", "validation", "test")] == [80, 10, 10]
    assert not (labels["train"] & labels["validation"] or labels["train"] & labels["test"])
    for segs in data.segments.values():
        for x in segs:
            loc, gt = x["location"], x["groundtruth"]
            feats = data.features[x["id"]]
            assert feats.shape[1] == synthetic.DIM and feats.dtype == np.float32
            assert 0 <= loc[0] < loc[1] <= len(feats) and 20 <= loc[1] - loc[0] <= 120
            assert gt[0] >= 0 and gt[1] <= loc[1] - loc[0] and 2 <= gt[1] - gt[0] <= 32
    again = synthetic.generate()
    assert again.segments == data.segments
    vid = data.segments["test"][7]["id"]
    np.testing.assert_array_equal(again.features[vid], data.features[vid])


def test_synthetic_class_signal_beats_background():
    """Segment rows carry the class signal: same-class segments are closer than other rows."""
    data = synthetic.generate(num_classes=10, segments_per_class=6)
    segs = data.segments["train"]

    def rows(x, inside):
        f = data.features[x["id"]]
        f = f - f.mean(0)
        a, b = x["location"][0] + x["groundtruth"][0], x["location"][0] + x["groundtruth"][1]
        return f[a:b] if inside else f[x["location"][0] : a]

    means = np.stack([rows(x, True).mean(0) for x in segs])
    labels = np.array([x["label"] for x in segs])
    sim = means @ means.T / np.outer(np.linalg.norm(means, axis=1), np.linalg.norm(means, axis=1))
    np.fill_diagonal(sim, np.nan)
    same = sim[labels[:, None] == labels[None, :]]
    other = sim[labels[:, None] != labels[None, :]]
    assert np.nanmean(same) > np.nanmean(other) + 0.2


def test_the_rules_import_no_tensorflow():
    code = (
        "import sys\n"
        "from tfds_activitynet_reloc.reorganize import reorganize\n"
        "from tfds_activitynet_reloc.activitynet_reloc import synthetic\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tensorflow_datasets', 'keras'))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout
