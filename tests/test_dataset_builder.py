"""Tests of the activitynet_reloc TFDS builder (dummy data, bad input, the `tfds build` command)."""

import json
import logging
import pathlib
import shutil
import subprocess
import sys

import custom_data
import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tiny_data import TINY_SYNTHETIC

from tfds_activitynet_reloc.activitynet_reloc import activitynet_reloc_dataset_builder as anr
from tfds_activitynet_reloc.activitynet_reloc import synthetic
from tfds_activitynet_reloc.reorganize import (
    ACTIVITYNET_CLASSES,
    RELEASE_PERM,
    class_permutation,
    draw_pairs,
    split_classes,
)
from video_reloc import data

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DUMMY = pathlib.Path(anr.__file__).parent / "dummy_data"
C3D_SPLITS = {"train": 5, "validation": 2, "test": 3}
TINY = TINY_SYNTHETIC


def _tiny_splits():
    data = synthetic.generate(10, 3)
    return {
        "train": len(data.segments["train"]),
        "validation": len(draw_pairs(data.segments["validation"])[0]),
        "test": len(draw_pairs(data.segments["test"])[0]),
    }


class C3dDummyDataTest(tfds.testing.DatasetBuilderTestCase):
    """Config c3d on `dummy_data/` (the manual dir)."""

    DATASET_CLASS = anr.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["c3d"]
    SPLITS = C3D_SPLITS


class SyntheticTest(tfds.testing.DatasetBuilderTestCase):
    """Config synthetic, shrunk (10 classes, 3 segments each)."""

    DATASET_CLASS = anr.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [TINY]
    SPLITS = _tiny_splits()


def test_tiny_synthetic_sizes():
    assert SyntheticTest.SPLITS["train"] == 8 * 3
    assert 1 <= SyntheticTest.SPLITS["validation"] <= 3
    assert 1 <= SyntheticTest.SPLITS["test"] <= 3


def _manual_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY, manual, ignore=shutil.ignore_patterns("*.py"))
    return manual


def _build(manual: pathlib.Path, data_dir: pathlib.Path, config="c3d"):
    builder = anr.Builder(config=config, data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    return builder


def _assert_nothing_written(data_dir: pathlib.Path):
    assert not list(data_dir.rglob("*.tfrecord*")), "examples written before the error"


def test_c3d_examples_hold_the_right_features(tmp_path, caplog):
    manual = _manual_copy(tmp_path)
    with caplog.at_level(logging.WARNING):
        builder = _build(manual, tmp_path / "data")
    assert "1 of 11 videos are not in sub_activitynet_v1-3.c3d.hdf5" in caplog.text
    assert "i2dFL7sGf9c" in caplog.text
    assert "RZr2KLNE6qE" in caplog.text  # the validation query without a long enough reference
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == C3D_SPLITS
    assert builder.info.features["query"].shape == (None, 500)
    label_names = builder.info.features["label"].names
    with h5py.File(manual / "sub_activitynet_v1-3.c3d.hdf5", "r") as f:
        feats = {k[2:]: f[k]["c3d_features"][()][::2] for k in f}
    lengths = json.loads((manual / "length.json").read_text())
    annotations = json.loads((manual / "activity_net.v1-3.min.json").read_text())["database"]
    train = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert sorted(x["reference_id"].decode() for x in train) == sorted(
        ["UyORfPxpaGo", "sOUNe30PXY4", "pSWcVR96xlc", "gU81ZXdYh7o", "gU81ZXdYh7o"]
    )
    for split in ("train", "validation", "test"):
        for ex in tfds.as_numpy(builder.as_dataset(split=split)):
            qid, rid = ex["query_id"].decode(), ex["reference_id"].decode()
            (q0, q1), (r0, r1), (g0, g1) = (
                ex["query_location"],
                ex["reference_location"],
                ex["groundtruth"],
            )
            np.testing.assert_array_equal(ex["query"], feats[qid][q0:q1])
            np.testing.assert_array_equal(ex["reference"], feats[rid][r0:r1])
            assert 0 <= g0 < g1 <= r1 - r0
            for vid, key in ((qid, "query"), (rid, "reference")):
                expected = annotations[vid]["duration"] / lengths[vid]["n_frames"] * 16
                assert ex[f"{key}_seconds_per_feature"] == pytest.approx(expected, rel=1e-6)
            if split == "train":
                assert qid == rid and q0 == r0 + g0 and q1 == r0 + g1
            else:
                assert (qid, q0) != (rid, r0 + g0)
                assert q1 - q0 <= r1 - r0
            assert label_names[ex["label"]] in [a["label"] for a in annotations[rid]["annotations"]]


def test_synthetic_train_queries_are_their_segment(tmp_path):
    builder = _build(tmp_path / "none", tmp_path / "data", config=TINY)
    for ex in tfds.as_numpy(builder.as_dataset(split="train")):
        g0, g1 = ex["groundtruth"]
        np.testing.assert_array_equal(ex["query"], ex["reference"][g0:g1])
        assert ex["query"].shape[1] == synthetic.DIM


@pytest.mark.parametrize(
    "missing", ["activity_net.v1-3.min.json", "length.json", "sub_activitynet_v1-3.c3d.hdf5"]
)
def test_missing_manual_file(tmp_path, missing):
    manual = _manual_copy(tmp_path)
    (manual / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        _build(manual, tmp_path / "data")
    _assert_nothing_written(tmp_path / "data")


def _rewrite_features(manual, video, fn):
    with h5py.File(manual / "sub_activitynet_v1-3.c3d.hdf5", "a") as f:
        data = fn(f[f"v_{video}/c3d_features"][()])
        del f[f"v_{video}/c3d_features"]
        f.create_dataset(f"v_{video}/c3d_features", data=data)


def _nan_row(x):
    x[6, 3] = np.nan
    return x


def _inf_row(x):
    x[2, 0] = np.inf
    return x


@pytest.mark.parametrize(
    "video,fn,message",
    [
        ("kBUDMFgWO9I", _nan_row, r"NaN or infinite values in feature rows \[3\]"),
        ("AWryNQMbcd8", _inf_row, r"NaN or infinite values in feature rows \[1\]"),
        (
            "qxQWNu_MN94",
            lambda x: x[:-4],
            r"10 features after keeping every 2\. row \(20 rows\), length.json says 12",
        ),
        ("gU81ZXdYh7o", lambda x: x[:, :499], "feature dimension 499"),
    ],
)
def test_bad_features_name_file_and_video(tmp_path, video, fn, message):
    manual = _manual_copy(tmp_path)
    _rewrite_features(manual, video, fn)
    with pytest.raises(ValueError, match=message) as err:
        _build(manual, tmp_path / "data")
    assert "sub_activitynet_v1-3.c3d.hdf5" in str(err.value) and video in str(err.value)
    _assert_nothing_written(tmp_path / "data")


@pytest.mark.parametrize(
    "name", ["activity_net.v1-3.min.json", "length.json", "sub_activitynet_v1-3.c3d.hdf5"]
)
def test_truncated_file(tmp_path, name):
    manual = _manual_copy(tmp_path)
    path = manual / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        _build(manual, tmp_path / "data")
    _assert_nothing_written(tmp_path / "data")


def test_length_entry_missing_names_video(tmp_path):
    manual = _manual_copy(tmp_path)
    lengths = json.loads((manual / "length.json").read_text())
    del lengths["CI6cPLeVCTk"]
    (manual / "length.json").write_text(json.dumps(lengths))
    with pytest.raises(ValueError, match="length.json.*CI6cPLeVCTk"):
        _build(manual, tmp_path / "data")


def _tfds_build(config, manual_dir, data_dir):
    """Runs `tfds build` (the command) on one config."""
    tfds_cli = pathlib.Path(sys.executable).parent / "tfds"
    if not tfds_cli.exists():
        pytest.skip(f"no tfds command next to {sys.executable}")
    result = subprocess.run(
        [
            str(tfds_cli),
            "build",
            "tfds_activitynet_reloc/activitynet_reloc",
            f"--config={config}",
            f"--manual_dir={manual_dir}",
            f"--data_dir={data_dir}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_tfds_build_command(tmp_path):
    data_dir = tmp_path / "data"
    # One config at a time: without --config, `tfds build` builds every config, the generated
    # simulated_c3d (1.6 GB) among them. (The binaries build config synthetic themselves.)
    _tfds_build("c3d", DUMMY, data_dir)
    for split, n in C3D_SPLITS.items():
        ds = tfds.load("activitynet_reloc/c3d", split=split, data_dir=data_dir, download=False)
        assert sum(1 for _ in ds) == n


# Config custom: another taxonomy, another D, either features layout, splits.json.


@pytest.fixture(scope="module")
def custom_manual(tmp_path_factory):
    return custom_data.write_manual_dir(tmp_path_factory.mktemp("custom") / "manual")


@pytest.fixture(scope="module")
def custom_built(custom_manual, tmp_path_factory):
    return _build(custom_manual, tmp_path_factory.mktemp("custom_data"), config="custom")


def _custom_copy(custom_manual, tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(custom_manual, manual)
    return manual


def test_custom_takes_the_taxonomy_d_and_a_seeded_class_split(custom_built, custom_manual):
    builder = custom_built
    assert builder.info.features["label"].names == sorted(custom_data.CLASSES)
    assert builder.info.metadata["features"]["clip_length"] == custom_data.CLIP
    expected = split_classes(custom_data.CLASSES, class_permutation(len(custom_data.CLASSES)))
    assert class_permutation(5) == [2, 0, 1, 3, 4]  # RandomState(0): documented, never changes
    assert expected == {
        "train": ["Cracking eggs", "Kneading dough", "Peeling apples"],
        "validation": ["Slicing bread"],
        "test": ["Stirring soup"],
    }
    annotations = json.loads((custom_manual / "activity_net.v1-3.min.json").read_text())
    with h5py.File(custom_manual / "features.hdf5", "r") as f:
        feats = {k[2:]: f[k]["features"][()] for k in f}
    label_names = builder.info.features["label"].names
    for split in ("train", "validation", "test"):
        examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
        assert {label_names[x["label"]] for x in examples} == set(expected[split])
        assert len(examples) == (
            len(expected[split]) * custom_data.VIDEOS_PER_CLASS if split == "train" else 6
        )
        for ex in examples:
            qid, rid = ex["query_id"].decode(), ex["reference_id"].decode()
            (q0, q1), (r0, r1) = ex["query_location"], ex["reference_location"]
            assert ex["query"].shape[1] == custom_data.DIM
            np.testing.assert_array_equal(ex["query"], feats[qid][q0:q1])  # every row kept
            np.testing.assert_array_equal(ex["reference"], feats[rid][r0:r1])
            (g0, g1) = ex["groundtruth"]
            segment = annotations["database"][rid]["annotations"][0]["segment"]
            seconds = custom_data.CLIP / custom_data.FPS
            assert ex["reference_seconds_per_feature"] == pytest.approx(seconds, rel=1e-3)
            assert r0 + g0 == int(segment[0] / seconds)
            assert r0 + g1 == int(segment[1] / seconds) + 1


def test_custom_splits_json_names_the_classes(custom_manual, tmp_path):
    manual = _custom_copy(custom_manual, tmp_path)
    splits = {
        "train": ["Cracking eggs", "Stirring soup"],
        "validation": ["Kneading dough"],
        "test": ["Slicing bread"],
    }  # "Peeling apples" is in no split: not used
    (manual / "splits.json").write_text(json.dumps(splits))
    builder = _build(manual, tmp_path / "data", config="custom")
    names = builder.info.features["label"].names
    for split, classes in splits.items():
        labels = {names[x["label"]] for x in tfds.as_numpy(builder.as_dataset(split=split))}
        assert labels == set(classes)


@pytest.mark.parametrize(
    "splits,message",
    [
        (
            {"train": ["Cracking eggs", "Peeling apples"], "validation": ["Slicing bread"]},
            "split 'test' needs a non-empty list",
        ),
        (
            {
                "train": ["Cracking eggs", "Slicing bread"],
                "validation": ["Slicing bread"],
                "test": ["Stirring soup"],
            },
            "class 'Slicing bread' is in two splits: 'train' and 'validation'",
        ),
        (
            {"train": ["Cracking eggs"], "validation": ["Baking"], "test": ["Stirring soup"]},
            "split 'validation': class 'Baking' is not a leaf class of the taxonomy",
        ),
        ('{"train": ["Cracking eggs"], ', "not valid JSON"),
    ],
)
def test_custom_bad_splits_json_is_named(custom_manual, tmp_path, splits, message):
    manual = _custom_copy(custom_manual, tmp_path)
    text = splits if isinstance(splits, str) else json.dumps(splits)
    (manual / "splits.json").write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        _build(manual, tmp_path / "data", config="custom")
    assert str(manual / "splits.json") in str(err.value)
    _assert_nothing_written(tmp_path / "data")


def _edit_annotations(manual, fn):
    path = manual / "activity_net.v1-3.min.json"
    annotations = json.loads(path.read_text())
    fn(annotations)
    path.write_text(json.dumps(annotations))


def test_custom_bad_annotations_are_named(custom_manual, tmp_path):
    manual = _custom_copy(custom_manual, tmp_path)

    def unknown_label(annotations):
        annotations["database"]["slicing_2"]["annotations"][0]["label"] = "Slicing brad"

    _edit_annotations(manual, unknown_label)
    with pytest.raises(ValueError, match="video slicing_2: label 'Slicing brad' is not a leaf"):
        _build(manual, tmp_path / "data", config="custom")

    def two_classes(annotations):
        annotations["taxonomy"] = custom_data.taxonomy(custom_data.CLASSES[:2])

    manual = _custom_copy(custom_manual, tmp_path / "two")
    _edit_annotations(manual, two_classes)
    with pytest.raises(ValueError, match="2 leaf classes; .* need at least 3") as err:
        _build(manual, tmp_path / "data", config="custom")
    assert "activity_net.v1-3.min.json" in str(err.value)

    manual = _custom_copy(custom_manual, tmp_path / "none")
    _edit_annotations(manual, lambda annotations: annotations.pop("taxonomy"))
    with pytest.raises(ValueError, match=r"activity_net\.v1-3\.min\.json: no 'taxonomy'"):
        _build(manual, tmp_path / "data", config="custom")
    _assert_nothing_written(tmp_path / "data")


def _rewrite_custom(manual, video, fn):
    with h5py.File(manual / "features.hdf5", "a") as f:
        data = fn(f[f"v_{video}/features"][()])
        del f[f"v_{video}"]
        if data is not None:
            f.create_dataset(f"v_{video}/features", data=data)


@pytest.mark.parametrize(
    "video,fn,message",
    [
        ("kneading_3", _nan_row, r"NaN or infinite values in feature rows \[6\]"),
        ("peeling_1", lambda x: x[:-3], r"after keeping every 1\. row .*length.json says"),
        ("stirring_0", lambda x: x[:, :20], r"feature dimension 20 != 24 \(video \w+'s\)"),
    ],
)
def test_custom_bad_features_name_file_and_video(custom_manual, tmp_path, video, fn, message):
    manual = _custom_copy(custom_manual, tmp_path)
    _rewrite_custom(manual, video, fn)
    with pytest.raises(ValueError, match=message) as err:
        _build(manual, tmp_path / "data", config="custom")
    assert "features.hdf5" in str(err.value) and video in str(err.value)
    _assert_nothing_written(tmp_path / "data")


def test_custom_missing_files_and_videos(custom_manual, tmp_path, caplog):
    manual = _custom_copy(custom_manual, tmp_path)
    (manual / "features.hdf5").rename(manual / "elsewhere.hdf5")
    with pytest.raises(FileNotFoundError, match=r"features\.hdf5 \(or sub_activitynet"):
        _build(manual, tmp_path / "data", config="custom")
    shutil.copy(manual / "elsewhere.hdf5", manual / "features.hdf5")
    shutil.copy(manual / "elsewhere.hdf5", manual / "sub_activitynet_v1-3.c3d.hdf5")
    with pytest.raises(ValueError, match="holds both features.hdf5 and sub_activitynet"):
        _build(manual, tmp_path / "data", config="custom")
    (manual / "sub_activitynet_v1-3.c3d.hdf5").unlink()
    (manual / "length.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"length\.json"):
        _build(manual, tmp_path / "data", config="custom")
    _assert_nothing_written(tmp_path / "data")

    # cracking_4 lost its features; peeling_2 was never made (no features, no length entry),
    # as a file video-reloc-features could not decode: both skipped and counted.
    manual = _custom_copy(custom_manual, tmp_path / "gone")
    _rewrite_custom(manual, "cracking_4", lambda x: None)
    _rewrite_custom(manual, "peeling_2", lambda x: None)
    lengths = json.loads((manual / "length.json").read_text())
    del lengths["peeling_2"]
    (manual / "length.json").write_text(json.dumps(lengths))
    with caplog.at_level(logging.WARNING):
        builder = _build(manual, tmp_path / "data", config="custom")
    assert (
        "1 of 30 annotated videos have neither features in features.hdf5 nor an entry in "
        "length.json (files that could not be decoded?); they are skipped: peeling_2"
    ) in caplog.text
    assert "1 of 29 videos are not in features.hdf5; their 1 segments are skipped" in caplog.text
    assert "cracking_4" in caplog.text
    assert builder.info.splits["train"].num_examples == 3 * custom_data.VIDEOS_PER_CLASS - 2


def test_custom_built_from_other_files_is_refused(custom_built, custom_manual, tmp_path):
    data_dir = pathlib.Path(custom_built.data_dir).parents[2]  # DIR/activitynet_reloc/custom/1.1.0
    same = data.dataset_builder("activitynet_reloc/custom", data_dir, custom_manual)
    assert same.info.splits["train"].num_examples == custom_built.info.splits["train"].num_examples
    manual = _custom_copy(custom_manual, tmp_path)
    _edit_annotations(manual, lambda a: a["database"]["slicing_1"].update(duration=99.0))
    with pytest.raises(ValueError, match="was built from other files than those in"):
        data.dataset_builder("activitynet_reloc/custom", data_dir, manual)


def test_custom_on_activitynet_files_with_the_release_split_is_c3d(tmp_path):
    """The C3D layout under config custom, with splits.json naming the release's split."""
    manual = _manual_copy(tmp_path)
    (manual / "splits.json").write_text(
        json.dumps(split_classes(ACTIVITYNET_CLASSES, RELEASE_PERM))
    )
    custom = _build(manual, tmp_path / "custom", config="custom")
    c3d = _build(manual, tmp_path / "c3d", config="c3d")
    assert custom.info.features["label"].names == c3d.info.features["label"].names
    for split in ("train", "validation", "test"):
        mine = list(tfds.as_numpy(custom.as_dataset(split=split, shuffle_files=False)))
        theirs = list(tfds.as_numpy(c3d.as_dataset(split=split, shuffle_files=False)))
        assert len(mine) == len(theirs) == C3D_SPLITS[split]
        key = lambda x: (x["reference_id"], tuple(x["reference_location"]), x["query_id"])  # noqa: E731
        for a, b in zip(sorted(mine, key=key), sorted(theirs, key=key)):
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.slow
def test_tfds_build_command_custom(custom_manual, tmp_path):
    data_dir = tmp_path / "data"
    _tfds_build("custom", custom_manual, data_dir)
    builder = tfds.builder("activitynet_reloc/custom", data_dir=data_dir)
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
        "train": 18,
        "validation": 6,
        "test": 6,
    }
    assert builder.info.features["label"].names == sorted(custom_data.CLASSES)
    assert builder.info.metadata["features"]["feature_dim"] == custom_data.DIM
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="test"))))
    assert example["reference"].shape[1] == custom_data.DIM


def test_dataset_builder_errors_are_one_line(tmp_path):
    """What the binaries print: the dataset and the flag, folder or file at fault."""
    with pytest.raises(data.DatasetError, match=r"^--dataset=activitynet_reloc/nosuch: ") as err:
        data.dataset_builder("activitynet_reloc/nosuch", tmp_path / "data", tmp_path)
    assert "\n" not in str(err.value)
    nowhere = tmp_path / "nowhere"
    with pytest.raises(data.DatasetError) as err:
        data.dataset_builder("activitynet_reloc/custom", tmp_path / "data", nowhere)
    assert str(err.value) == (
        f"activitynet_reloc/custom: Manual directory {nowhere} does not exist or is empty."
    )
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "activity_net.v1-3.min.json").write_text("{}")
    with pytest.raises(data.DatasetError) as err:
        data.dataset_builder("activitynet_reloc/custom", tmp_path / "data", manual)
    assert str(err.value) == (
        f"activitynet_reloc/custom: Manual file features.hdf5 (or sub_activitynet_v1-3.c3d.hdf5) "
        f"not found in {manual}; make it with video-reloc-features --output={manual}"
    )
    (manual / "features.hdf5").write_bytes(b"")
    with pytest.raises(data.DatasetError) as err:
        data.dataset_builder("activitynet_reloc/custom", tmp_path / "data", manual)
    assert (
        str(err.value)
        == f"activitynet_reloc/custom: Manual file length.json not found in {manual}."
    )
