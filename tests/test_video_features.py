"""From video files to answers: features, a custom build, a short training run, relocalize.

Small videos of moving shapes are written with PyAV and embedded by a tiny backbone saved in
the test; nothing is downloaded (a named backbone must fail offline with a one-line error).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import h5py
import numpy as np
import pytest
import video_data
from test_binaries import _command

from video_reloc import checkpoints, evaluation, features, relocalize, training
from video_reloc.errors import UserError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SECONDS = 20  # per video
VIDEOS_PER_CLASS = 3


def _run(args, env=None, timeout=300):
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Fifteen videos (3 of each of 5 classes), a broken one, their annotations in seconds."""
    root = tmp_path_factory.mktemp("videos")
    folder = root / "videos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    database = {}
    for c, name in enumerate(video_data.CLASSES):
        for k in range(VIDEOS_PER_CLASS):
            stem = f"{name.replace(' ', '_').lower()}_{k}"
            length = int(rng.integers(4, 8))
            start = int(rng.integers(1, SECONDS - length - 1))
            segments = [(start, start + length, c)]
            other = (c + 1 + k) % len(video_data.CLASSES)  # a shorter segment of another class
            gap = [t for t in range(SECONDS - 3) if t + 3 < start or t > start + length]
            if gap:
                at = int(rng.choice(gap))
                segments.append((at, at + 2, other))
            frames = video_data.frames(SECONDS, segments, seed=int(rng.integers(1 << 30)))
            video_data.write_video(folder / f"{stem}.mp4", frames)
            database[stem] = {
                "duration": float(SECONDS),
                "subset": "training",
                "annotations": [
                    {"segment": [float(s), float(e)], "label": video_data.CLASSES[label]}
                    for s, e, label in segments
                ],
            }
    (folder / "broken.mp4").write_bytes(rng.bytes(4000))  # cannot be decoded
    (folder / "notes.txt").write_text("not a video")  # not a video's ending: not read
    backbone = video_data.tiny_backbone(root / "tiny.keras")
    return folder, backbone, database


@pytest.fixture(scope="module")
def extraction(videos):
    """`video-reloc-features` on the folder of videos."""
    folder, backbone, _ = videos
    manual = folder.parent / "manual"
    proc = _run(
        [*_command("features"), f"--input={folder}", f"--output={manual}", f"--backbone={backbone}"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return manual, proc


@pytest.fixture(scope="module")
def manual_dir(videos, extraction):
    """The features of the videos plus their annotations: a manual dir of config custom."""
    _, _, database = videos
    manual, _ = extraction
    nodes = [{"nodeId": 0, "nodeName": "Shapes", "parentId": None, "parentName": None}] + [
        {"nodeId": k + 1, "nodeName": name, "parentId": 0, "parentName": "Shapes"}
        for k, name in enumerate(video_data.CLASSES)
    ]
    # broken.mp4 is annotated too: its features could not be made, so the build skips it.
    broken = {"duration": 10.0, "annotations": [{"segment": [1.0, 4.0], "label": "Red disc"}]}
    annotations = {
        "version": "shapes",
        "taxonomy": nodes,
        "database": {**database, "broken": broken},
    }
    (manual / "activity_net.v1-3.min.json").write_text(json.dumps(annotations))
    return manual


def test_sample_frames_take_the_frame_shown_at_each_time(videos):
    folder, _, _ = videos
    path = folder / "blue_square_0.mp4"
    written = video_data.frames(SECONDS, [])  # background only: compare the slow drift
    full = np.stack(list(features.sample_frames(path, 16, (video_data.HEIGHT, video_data.WIDTH))))
    assert full.shape == (SECONDS * 16, video_data.HEIGHT, video_data.WIDTH, 3)
    half = list(features.sample_frames(path, 8, (24, 32)))
    double = list(features.sample_frames(path, 32, (24, 32)))
    assert len(half) == SECONDS * 8 and len(double) == SECONDS * 32
    np.testing.assert_array_equal(double[2], double[3])  # 32/s from a 16/s video: each twice
    smaller = np.stack(list(features.sample_frames(path, 16, (24, 32))))
    np.testing.assert_array_equal(smaller[::2], np.stack(half))
    # The decoded frames are the written ones (MPEG-4 is lossy): the background's brightness
    # drifts from -15 to +15 over the video, and frame k shows the drift of time k / 16.
    brightness = full.reshape(len(full), -1).mean(axis=1)
    drift = written.reshape(len(written), -1).mean(axis=1)
    assert np.corrcoef(brightness, drift)[0, 1] > 0.9


def test_clip_averager_means_clips_of_16_and_a_short_last_one():
    embeddings = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    averager = features.ClipAverager(16)
    for first in range(0, 40, 7):  # batches that straddle clip boundaries
        averager.add(embeddings[first : first + 7])
    rows = averager.result()
    assert rows.shape == (3, 3) and rows.dtype == np.float32 and averager.frames == 40
    np.testing.assert_allclose(rows[0], embeddings[:16].mean(0))
    np.testing.assert_allclose(rows[1], embeddings[16:32].mean(0))
    np.testing.assert_allclose(rows[2], embeddings[32:].mean(0))


def test_features_layout_and_spec(videos, manual_dir):
    folder, backbone_path, database = videos
    backbone = features.load_backbone(backbone_path)
    spec = features.read_spec(manual_dir / "features.json")
    assert spec == backbone.spec()
    assert (spec.frame_rate, spec.clip_length, spec.frame_size, spec.feature_dim) == (
        16.0,
        16,
        (32, 32),
        24,
    )
    assert spec.weights_sha256 == features.weights_sha256(backbone.model.get_weights())
    lengths = json.loads((manual_dir / "length.json").read_text())
    assert lengths.keys() == database.keys()
    assert all(v == {"n_frames": SECONDS * 16, "n_feat": SECONDS} for v in lengths.values())
    stem = sorted(database)[0]
    with h5py.File(manual_dir / "features.hdf5", "r") as h5:
        assert sorted(h5) == sorted(f"v_{s}" for s in database)
        rows = h5[f"v_{stem}/features"][()]
    assert rows.shape == (SECONDS, 24) and rows.dtype == np.float32
    again, frames = features.video_features(folder / f"{stem}.mp4", backbone)
    assert frames == SECONDS * 16
    np.testing.assert_allclose(again, rows, rtol=1e-5, atol=1e-5)
    # Row k averages the embeddings of frames 16k ... 16k + 15 (one second).
    frames_5 = list(features.sample_frames(folder / f"{stem}.mp4", 16, (32, 32)))[80:96]
    np.testing.assert_allclose(rows[5], backbone(np.stack(frames_5)).mean(0), rtol=1e-4, atol=1e-5)
    # The shape of the video's own class shows in its segment's rows, not in the background.
    (start, end), *_ = [a["segment"] for a in database[stem]["annotations"]]
    inside = np.linalg.norm(rows[int(start) + 1 : int(end) - 1] - rows[0], axis=1).mean()
    assert inside > 3 * np.linalg.norm(rows[1] - rows[0])


def test_features_binary_names_undecodable_files_and_a_second_run_skips(
    videos, extraction, tmp_path
):
    folder, backbone, database = videos
    manual, proc = extraction
    assert f"{len(database)} videos written, 0 already there, 1 could not be decoded" in proc.stdout
    assert f"skipped {folder / 'broken.mp4'}: Invalid data" in proc.stdout
    assert "videos: 100%" in proc.stderr  # the progress bar
    written = (manual / "features.hdf5").read_bytes()

    again = features.extract_features(folder, manual, backbone=backbone, progress=False)
    assert (again.written, sorted(again.skipped)) == ([], sorted(database))
    assert list(again.failed) == [str(folder / "broken.mp4")]
    assert (manual / "features.hdf5").read_bytes() == written

    with pytest.raises(features.FeaturesError, match="made another way; this run's frame_rate 8"):
        features.extract_features(folder, manual, backbone=backbone, frame_rate=8)
    with pytest.raises(features.FeaturesError, match="no video file"):
        features.extract_features(tmp_path, tmp_path / "x", backbone=backbone)
    with pytest.raises(features.FeaturesError, match="neither a .keras file nor"):
        features.load_backbone("NoSuchNet")


def test_named_backbone_offline_fails_in_one_line_without_downloading(videos, tmp_path):
    folder, _, _ = videos
    dead = "http://127.0.0.1:9"  # nothing listens: any download fails at once
    env = {"KERAS_HOME": str(tmp_path / "keras"), "no_proxy": "", "NO_PROXY": ""}
    env.update({name: dead for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})
    proc = _run(
        [
            *_command("features"),
            f"--input={folder}",
            f"--output={tmp_path / 'out'}",
            "--backbone=MobileNetV3Small",
        ],
        env=env,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("video-reloc-features: --backbone=MobileNetV3Small: cannot fetch")
    assert "pass --backbone=PATH" in last and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "keras").rglob("*.h5"))


@pytest.fixture(scope="module")
def trained(manual_dir, tmp_path_factory):
    """`video-reloc-train` on the custom dataset: it builds it from the manual dir."""
    root = tmp_path_factory.mktemp("trained")
    proc = _run(
        [
            *_command("train"),
            "--dataset=activitynet_reloc/custom",
            f"--manual_dir={manual_dir}",
            f"--data_dir={root / 'data'}",
            f"--model_dir={root / 'model'}",
            "--train_steps=2",
            "--batch_size=4",
            "--units=8",
            "--bilinear_rank=2",
            "--eval_every=2",
            "--checkpoint_every=2",
            "--num_images=0",
            "--noprogress",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root / "model", root / "data", proc


@pytest.mark.slow
def test_train_on_custom_carries_the_feature_spec_into_the_export(trained, manual_dir):
    model_dir, data_dir, proc = trained
    assert (data_dir / "activitynet_reloc" / "custom").is_dir()  # built by the command
    assert "have neither features in features.hdf5 nor an entry in length.json" in proc.stderr
    assert "they are skipped: broken" in proc.stderr
    assert "| Ours |" in proc.stdout
    spec = json.loads((manual_dir / "features.json").read_text())
    assert json.loads((model_dir / "features.json").read_text()) == spec
    export = relocalize.saved_model_folder(model_dir / "export")
    assert json.loads((export / "assets.extra" / "video_reloc_features.json").read_text()) == spec
    # video-reloc-export of a checkpoint finds the spec in the checkpoint's model dir.
    assert checkpoints.recorded_feature_spec(checkpoints.find_model_dir(model_dir / "best")) == spec
    recorded = checkpoints.read_train_config(model_dir)
    assert recorded["dataset"] == "activitynet_reloc/custom"
    assert checkpoints.read_model_config(model_dir)["feature_dim"] == 24


@pytest.mark.slow
def test_relocalize_video_files_in_seconds_with_a_plot(trained, videos, tmp_path):
    model_dir, _, _ = trained
    folder, _, database = videos
    query, reference = folder / "yellow_disc_0.mp4", folder / "yellow_disc_1.mp4"
    (q0, q1) = database["yellow_disc_0"]["annotations"][0]["segment"]
    result = relocalize.relocalize_files(
        str(model_dir / "export"),
        str(query),
        str(reference),
        top_k=3,
        query_range=f"{int(q0)}:{int(q1)}",
        plot=tmp_path / "plot.png",
    )
    assert 1 <= len(result.segments) <= 3
    assert result.seconds_per_feature == 1.0  # 16 frames at 16 frames a second
    assert result.probabilities.shape == (SECONDS, 4)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, rtol=1e-4)
    for segment in result.segments:
        assert 0 <= segment.start < segment.end <= SECONDS
        assert segment.start_seconds == segment.start
        assert segment.end_seconds == min(segment.end, SECONDS)
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_relocalize_refuses_features_made_another_way(trained, videos, tmp_path):
    model_dir, _, _ = trained
    folder, _, _ = videos
    other = tmp_path / "other"
    shutil.copytree(folder.parent / "manual", other)
    spec = json.loads((other / "features.json").read_text())
    (other / "features.json").write_text(json.dumps({**spec, "frame_rate": 8.0}))
    with pytest.raises(ValueError, match=r"--query=.*made another way.*frame_rate 8.0"):
        relocalize.relocalize_files(
            str(model_dir / "export"),
            f"{other / 'features.hdf5'}:red_disc_0",
            str(folder / "red_disc_1.mp4"),
        )
    # A model that does not say how its features were made takes no video file.
    bare = tmp_path / "bare"
    shutil.copytree(relocalize.saved_model_folder(model_dir / "export"), bare)
    (bare / "assets.extra" / "video_reloc_features.json").unlink()
    with pytest.raises(ValueError, match="--query=.*does not say how its features were made"):
        relocalize.relocalize_files(str(bare), str(folder / "red_disc_0.mp4"), str(folder))


@pytest.mark.slow
def test_evaluate_plots_of_test_pairs(trained, tmp_path):
    model_dir, data_dir, _ = trained
    plots = tmp_path / "plots"
    result = evaluation.evaluate(
        evaluation.EvaluateConfig(
            model=str(model_dir / "best"), data_dir=str(data_dir), plots=str(plots), num_plots=2
        )
    )
    assert len(result.predictions.segments) >= VIDEOS_PER_CLASS  # the test class's pairs
    names = sorted(p.name for p in plots.iterdir())
    assert names == [
        "pair_000_attention.png",
        "pair_000_timeline.png",
        "pair_001_attention.png",
        "pair_001_timeline.png",
    ]
    for name in names:
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_names_a_bad_manual_file_in_one_line(manual_dir, tmp_path):
    """A NaN in one video's features: the video, the file and the rows, before any example.

    (The binaries print a `UserError` as this one line after their name: see test_cli.py.)
    """
    manual = tmp_path / "manual"
    shutil.copytree(manual_dir, manual)
    with h5py.File(manual / "features.hdf5", "a") as h5:
        h5["v_green_bar_1/features"][4, 2] = np.nan
    config = training.TrainConfig(
        model_dir=str(tmp_path / "model"),
        dataset="activitynet_reloc/custom",
        manual_dir=str(manual),
        data_dir=str(tmp_path / "data"),
    )
    with pytest.raises(UserError) as error:
        training.train(config)
    assert str(error.value) == (
        f"activitynet_reloc/custom: {manual / 'features.hdf5'}: video "
        "green_bar_1: NaN or infinite values in feature rows [4]"
    )
    assert not list((tmp_path / "data").rglob("*.tfrecord*"))


@pytest.mark.slow
def test_relocalize_binary_on_video_files(trained, videos, tmp_path):
    """The command as the README gives it: JSON segments in seconds, and the figure."""
    model_dir, _, _ = trained
    folder, _, database = videos
    (q0, q1) = database["red_disc_0"]["annotations"][0]["segment"]
    proc = _run(
        [
            *_command("relocalize"),
            f"--model={model_dir / 'export'}",
            f"--query={folder / 'red_disc_0.mp4'}",
            f"--query_range={int(q0)}:{int(q1)}",
            f"--reference={folder / 'red_disc_1.mp4'}",
            "--top_k=2",
            f"--plot={tmp_path / 'timeline.png'}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    segments = json.loads(proc.stdout)
    assert 1 <= len(segments) <= 2
    for segment in segments:
        assert segment["start_seconds"] == segment["start"]  # one feature a second
        assert 0 <= segment["start_seconds"] < segment["end_seconds"] <= SECONDS
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "red_disc_1: " in proc.stderr and "frame/s" in proc.stderr  # the frames' progress


def test_a_killed_run_loses_no_video(videos, tmp_path, monkeypatch):
    """SIGKILL after some videos: their saved parts reach features.hdf5 on the next run."""
    folder, backbone, database = videos
    calls = []
    real = features.video_features

    def killed_after_two(video, *args, **kwargs):
        if len(calls) == 2:
            raise SystemExit("killed")  # what a kill leaves: no merge of the parts after it
        result = real(video, *args, **kwargs)
        calls.append(video.stem)
        return result

    monkeypatch.setattr(features, "video_features", killed_after_two)
    monkeypatch.setattr(features, "_merge_parts", lambda output: 0)
    with pytest.raises(SystemExit):
        features.extract_features(folder, tmp_path, backbone=backbone, progress=False)
    assert sorted(p.name for p in (tmp_path / ".parts").iterdir()) == [
        f"v_{stem}.npz" for stem in sorted(calls)
    ]
    (tmp_path / ".features.hdf5.tmp").write_bytes(b"half a file of a killed merge")
    monkeypatch.undo()

    again = features.extract_features(folder, tmp_path, backbone=backbone, progress=False)
    assert sorted(again.skipped) == sorted(calls)
    assert sorted(again.written) == sorted(set(database) - set(calls))
    assert list((tmp_path / ".parts").iterdir()) == []
    lengths = json.loads((tmp_path / "length.json").read_text())
    assert sorted(lengths) == sorted(database)
    with h5py.File(tmp_path / "features.hdf5", "r") as h5:
        assert sorted(h5) == [f"v_{stem}" for stem in sorted(database)]
        for stem in database:
            assert h5[f"v_{stem}/features"].shape[0] == lengths[stem]["n_feat"]
