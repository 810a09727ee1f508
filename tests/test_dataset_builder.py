"""Tests of the activitynet_reloc TFDS builder (dummy data, bad input, the `tfds build` command)."""

import json
import logging
import pathlib
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tiny_data import TINY_SYNTHETIC

from tfds_activitynet_reloc.activitynet_reloc import activitynet_reloc_dataset_builder as anr
from tfds_activitynet_reloc.activitynet_reloc import synthetic
from tfds_activitynet_reloc.reorganize import draw_pairs

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


@pytest.mark.slow
def test_tfds_build_command(tmp_path):
    tfds_cli = pathlib.Path(sys.executable).parent / "tfds"
    if not tfds_cli.exists():
        pytest.skip(f"no tfds command next to {sys.executable}")
    data_dir = tmp_path / "data"
    # One config at a time: without --config, `tfds build` builds every config, the generated
    # simulated_c3d (1.6 GB) among them.
    for config in ("c3d", "synthetic"):
        result = subprocess.run(
            [
                str(tfds_cli),
                "build",
                "tfds_activitynet_reloc/activitynet_reloc",
                f"--config={config}",
                f"--manual_dir={DUMMY}",
                f"--data_dir={data_dir}",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    for split, n in C3D_SPLITS.items():
        ds = tfds.load("activitynet_reloc/c3d", split=split, data_dir=data_dir, download=False)
        assert sum(1 for _ in ds) == n
    ds = tfds.load(
        "activitynet_reloc/synthetic", split="validation", data_dir=data_dir, download=False
    )
    assert sum(1 for _ in ds) == 200
