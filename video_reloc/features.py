"""Features from video files: decode, sample frames at a fixed rate, embed, average over clips.

`extract_features` is the library function of `video-reloc-features`. For every video file it

1. decodes the video with PyAV (FFmpeg's bindings) and takes frames at `frame_rate` frames a
   second (at each time k / frame_rate, the frame shown then), resized to the backbone's input
   size (`sample_frames`);
2. embeds the frames with a Keras image backbone: RGB frames `(N, H, W, 3)`, values 0-255, to
   `(N, D)` embeddings (`Backbone`);
3. averages the embeddings over consecutive clips of `clip_length` frames (the last clip may
   be shorter), one feature row per clip, as one C3D row covers 16 frames (`ClipAverager`);

and writes, in the output folder, the layout config `custom` of the dataset builder reads:

- `features.hdf5`: group `v_<file stem>` per video, dataset `features`, `(n, D)` float32;
- `length.json`: `{"<file stem>": {"n_frames": sampled frames, "n_feat": n}}`;
- `features.json`: how the features were made (`FeatureSpec`: backbone, the SHA-256 of its
  weights, frame rate, clip length, frame size, D). Training carries it into the exported
  model, and `relocalize` refuses features made another way.

One feature row covers `clip_length / frame_rate` seconds (1 s with the defaults). A video
whose group is there already is skipped, so an interrupted run goes on where it stopped; a file
that cannot be decoded is skipped, named and counted, and the others go on.

Nothing is lost when a run is killed, even with SIGKILL: each video's features are first saved
on their own (`.parts/v_<stem>.npz`, written under a temporary name and renamed), and
`features.hdf5` is only ever replaced whole: its copy plus the new parts are written to
`.features.hdf5.tmp`, which is then renamed over it. That happens at the end of a run (also
after Ctrl-C) and at the start of the next one, which finds the parts a killed run left.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import pathlib
import queue
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import tqdm
from absl import logging

FRAME_RATE = 16.0
"""Frames sampled per second of video."""
CLIP_LENGTH = 16
"""Sampled frames averaged into one feature row."""
DEFAULT_BACKBONE = "MobileNetV3Large"
"""The Keras application used unless another is named (ImageNet weights, D = 960)."""
DEFAULT_FRAME_SIZE = 224
"""Frame height and width for a backbone whose input size is not fixed."""
FEATURES_FILE = "features.hdf5"
LENGTHS_FILE = "length.json"
SPEC_FILE = "features.json"
DATASET_NAME = "features"
VIDEO_SUFFIXES = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".3gp",
    ".ogv",
    ".ts",
)
"""File name endings taken as videos in an input folder."""


class FeaturesError(ValueError):
    """Bad input to the feature extraction: the message names the file or flag at fault."""


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """How features were made: what `features.json` holds and an exported model carries.

    Attributes:
        backbone: The Keras application's name or the `.keras` file's path.
        weights_sha256: SHA-256 of the backbone's weights (shapes and values, in order).
        frame_rate: Frames sampled per second.
        clip_length: Frames per feature row.
        frame_size: `(height, width)` of the frames the backbone sees.
        feature_dim: D.
    """

    backbone: str
    weights_sha256: str
    frame_rate: float
    clip_length: int
    frame_size: tuple[int, int]
    feature_dim: int

    @property
    def seconds_per_feature(self) -> float:
        """Seconds of video one feature row covers."""
        return self.clip_length / self.frame_rate

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "frame_size": list(self.frame_size)}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> FeatureSpec:
        """The spec of a parsed `features.json`; ValueError if a field is missing or bad."""
        try:
            return cls(
                backbone=str(values["backbone"]),
                weights_sha256=str(values["weights_sha256"]),
                frame_rate=float(values["frame_rate"]),
                clip_length=int(values["clip_length"]),
                frame_size=tuple(int(v) for v in values["frame_size"]),
                feature_dim=int(values["feature_dim"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a feature spec ({type(e).__name__}: {e})") from e

    def differences(self, other: FeatureSpec) -> list[str]:
        """The fields in which features made by `other` differ (the backbone's name aside)."""
        fields = ("weights_sha256", "frame_rate", "clip_length", "frame_size", "feature_dim")
        return [
            f"{name} {getattr(other, name)} (not {getattr(self, name)})"
            for name in fields
            if getattr(self, name) != getattr(other, name)
        ]


def read_spec(path: str | pathlib.Path) -> FeatureSpec:
    """The `FeatureSpec` of a `features.json` file; FeaturesError names the file."""
    path = pathlib.Path(path)
    try:
        return FeatureSpec.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        raise FeaturesError(f"{path}: {e}") from e


def weights_sha256(weights: Sequence[np.ndarray]) -> str:
    """SHA-256 of a model's weights: each one's shape, dtype and bytes, in order."""
    digest = hashlib.sha256()
    for weight in weights:
        weight = np.ascontiguousarray(weight)
        digest.update(f"{weight.shape}{weight.dtype}".encode())
        digest.update(weight.tobytes())
    return digest.hexdigest()


class Backbone:
    """A Keras image model as a frame embedder: RGB frames `(N, H, W, 3)`, 0-255, to `(N, D)`.

    Args:
        model: The Keras model (called with float32 frames after `preprocess`).
        name: Its name or path, as recorded in `FeatureSpec.backbone`.
        preprocess: Maps float32 frames 0-255 to the model's input (a Keras application's
            `preprocess_input`); `None`: none.
        frame_size: `(height, width)` of the frames; `None`: the model's input size, else
            `DEFAULT_FRAME_SIZE` square.
    """

    def __init__(
        self,
        model: Any,
        name: str,
        preprocess: Callable[[Any], Any] | None = None,
        frame_size: tuple[int, int] | None = None,
    ):
        import tensorflow as tf

        self.model = model
        self.name = name
        if frame_size is None:
            height, width = tuple(model.input_shape[1:3])
            frame_size = (height or DEFAULT_FRAME_SIZE, width or DEFAULT_FRAME_SIZE)
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        output_shape = tuple(model.output_shape)
        if len(output_shape) != 2 or output_shape[1] is None:
            raise FeaturesError(
                f"backbone {name}: its output has shape {output_shape}, expected (N, D) "
                "embeddings (pool the last feature map)"
            )
        self.feature_dim = int(output_shape[1])
        self.weights_sha256 = weights_sha256(model.get_weights())

        @tf.function(
            input_signature=[tf.TensorSpec((None, *self.frame_size, 3), tf.uint8)],
            reduce_retracing=True,
        )
        def embed(frames):
            x = tf.cast(frames, tf.float32)
            if preprocess is not None:
                x = preprocess(x)
            return tf.cast(model(x, training=False), tf.float32)

        self._embed = embed

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """`(N, H, W, 3)` uint8 frames to `(N, D)` float32 embeddings."""
        return self._embed(np.asarray(frames, np.uint8)).numpy()

    def spec(self, frame_rate: float = FRAME_RATE, clip_length: int = CLIP_LENGTH) -> FeatureSpec:
        """The `FeatureSpec` of features this backbone makes at that rate and clip length."""
        return FeatureSpec(
            backbone=self.name,
            weights_sha256=self.weights_sha256,
            frame_rate=float(frame_rate),
            clip_length=int(clip_length),
            frame_size=self.frame_size,
            feature_dim=self.feature_dim,
        )


def load_backbone(name_or_path: str | pathlib.Path) -> Backbone:
    """A Keras application by name (ImageNet weights, average-pooled) or a `.keras` model file.

    A named application's weights are fetched once into Keras' cache (`~/.keras/models`, or
    `$KERAS_HOME/models`); without network and cache the error says to pass a path. A file must
    map RGB frames `(N, H, W, 3)`, values 0-255, to `(N, D)`; its input size gives the frames'.

    Raises:
        FeaturesError: One line naming the backbone: unknown name, missing file, weights that
            cannot be fetched, or a model of the wrong shape.
    """
    import keras

    text = str(name_or_path)
    path = pathlib.Path(text).expanduser()
    if text.endswith(".keras") or path.exists():
        if not path.is_file():
            what = "not a .keras file" if path.exists() else "no such file"
            raise FeaturesError(f"--backbone={text}: {what}")
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001 (any failure to read the file)
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise FeaturesError(f"--backbone={text}: cannot load the Keras model: {reason}") from e
        return Backbone(model, str(path.resolve()))
    application = getattr(keras.applications, text, None)
    if not callable(application) or not text[:1].isupper():
        raise FeaturesError(
            f"--backbone={text}: neither a .keras file nor a Keras application name "
            "(e.g. MobileNetV3Large, ResNet50, EfficientNetB0)"
        )
    size = DEFAULT_FRAME_SIZE
    try:
        model = application(
            include_top=False, weights="imagenet", pooling="avg", input_shape=(size, size, 3)
        )
    except Exception as e:  # noqa: BLE001 (Keras raises a bare Exception when it cannot fetch)
        # "URL fetch failure on URL: None -- [Errno 111] Connection refused": the reason.
        reason = (str(e).splitlines() or [type(e).__name__])[0].rpartition(" -- ")[2]
        cache = pathlib.Path(os.environ.get("KERAS_HOME", "~/.keras")) / "models"
        raise FeaturesError(
            f"--backbone={text}: cannot fetch its ImageNet weights into Keras' cache {cache} "
            f"({reason}); offline, pass --backbone=PATH to a .keras model"
        ) from e
    preprocess = importlib.import_module(application.__module__).preprocess_input
    return Backbone(model, text, preprocess=preprocess, frame_size=(size, size))


class VideoError(Exception):
    """A video file that cannot be decoded (skipped by `extract_features`)."""


def _video_stream(container):
    if not container.streams.video:
        raise VideoError("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # FFmpeg's frame and slice threads
    return stream


def expected_frames(path: str | pathlib.Path, frame_rate: float = FRAME_RATE) -> int | None:
    """About how many frames `sample_frames` will give (from the container's duration)."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration is None:
                return None
            return int(np.ceil(container.duration / av.time_base * frame_rate))
    except (av.FFmpegError, OSError):
        return None


def sample_frames(
    path: str | pathlib.Path,
    frame_rate: float = FRAME_RATE,
    frame_size: tuple[int, int] = (DEFAULT_FRAME_SIZE, DEFAULT_FRAME_SIZE),
) -> Iterator[np.ndarray]:
    """Decodes a video and yields RGB frames at `frame_rate`, resized to `frame_size`.

    Sample k is the frame shown k / frame_rate seconds after the start, so a video of T
    seconds gives about T * frame_rate frames whatever its own frame rate (frames repeat when
    the video has fewer).

    Yields:
        `(height, width, 3)` uint8 frames.

    Raises:
        VideoError: If the file cannot be opened or decoded, or holds no video frame.
    """
    import av

    height, width = frame_size
    count = 0
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container)
            start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            own_rate = float(stream.average_rate or stream.guessed_rate or 25)
            for index, frame in enumerate(container.decode(stream)):
                shown = frame.time - start if frame.time is not None else index / own_rate
                # The frames of every sample time up to the end of this frame's display.
                end = shown + 1.0 / own_rate
                if count / frame_rate >= end:
                    continue
                image = frame.to_ndarray(format="rgb24", width=width, height=height)
                while count / frame_rate < end:
                    yield image
                    count += 1
    except av.FFmpegError as e:  # "Invalid data found when processing input", ...
        raise VideoError(getattr(e, "strerror", None) or str(e)) from e
    if count == 0:
        raise VideoError("no video frame decoded")


class ClipAverager:
    """Averages embeddings over consecutive clips of `clip_length` frames, streaming.

    Args:
        clip_length: Frames per clip.
    """

    def __init__(self, clip_length: int = CLIP_LENGTH):
        if clip_length < 1:
            raise ValueError(f"clip_length must be positive, got {clip_length}")
        self.clip_length = clip_length
        self.rows: list[np.ndarray] = []
        self._sum: np.ndarray | None = None
        self._count = 0
        self.frames = 0

    def add(self, embeddings: np.ndarray) -> None:
        """Adds `(N, D)` embeddings of the next N frames."""
        embeddings = np.asarray(embeddings, np.float64)
        self.frames += len(embeddings)
        while len(embeddings):
            take = self.clip_length - self._count
            part, embeddings = embeddings[:take], embeddings[take:]
            total = part.sum(axis=0)
            self._sum = total if self._sum is None else self._sum + total
            self._count += len(part)
            if self._count == self.clip_length:
                self._flush()

    def _flush(self) -> None:
        self.rows.append((self._sum / self._count).astype(np.float32))
        self._sum, self._count = None, 0

    def result(self) -> np.ndarray:
        """`(ceil(frames / clip_length), D)` float32: the last clip averages what it has."""
        if self._count:
            self._flush()
        if not self.rows:
            raise ValueError("no frames were added")
        return np.stack(self.rows)


def _batches(frames: Iterator[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


_DONE = object()


def _prefetched(batches: Iterator[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
    """Runs `batches` in a thread (decoding) while the caller works (embedding)."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for batch in batches:
                if stop.is_set():
                    return
                slots.put(batch)
            slots.put(_DONE)
        except BaseException as e:  # noqa: BLE001 (handed to the consumer)
            slots.put(e)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def video_features(
    path: str | pathlib.Path,
    backbone: Backbone,
    frame_rate: float = FRAME_RATE,
    clip_length: int = CLIP_LENGTH,
    batch_size: int = 32,
    on_frames: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """The features of one video file.

    Args:
        path: The video file.
        backbone: The frame embedder.
        frame_rate: Frames sampled per second.
        clip_length: Frames per feature row.
        batch_size: Frames per backbone call.
        on_frames: Called with the number of frames of each embedded batch (progress).

    Returns:
        `(features, n_frames)`: `(ceil(n_frames / clip_length), D)` float32 features and the
        number of frames sampled.

    Raises:
        VideoError: If the file cannot be decoded.
    """
    averager = ClipAverager(clip_length)
    frames = sample_frames(path, frame_rate, backbone.frame_size)
    for batch in _prefetched(_batches(frames, batch_size)):
        averager.add(backbone(batch))
        if on_frames is not None:
            on_frames(len(batch))
    return averager.result(), averager.frames


def frames_progress(
    path: pathlib.Path, frame_rate: float = FRAME_RATE, show: bool = True, leave: bool = False
) -> tqdm.tqdm:
    """A progress bar of the frames sampled from one video (its total from the duration)."""
    return tqdm.tqdm(
        total=expected_frames(path, frame_rate),
        unit="frame",
        desc=path.stem[:24],
        leave=leave,
        disable=not show,
        dynamic_ncols=True,
    )


def find_videos(source: str | pathlib.Path) -> list[pathlib.Path]:
    """The video files of `source`: the file itself, or a folder's files with a video ending.

    Raises:
        FeaturesError: If `source` does not exist, holds no video, or two videos share a stem
            (their group would be the same).
    """
    source = pathlib.Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FeaturesError(f"--input={source}: no such file or folder")
    videos = sorted(
        p for p in source.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
    )
    if not videos:
        raise FeaturesError(f"--input={source}: no video file (endings {' '.join(VIDEO_SUFFIXES)})")
    stems: dict[str, pathlib.Path] = {}
    for video in videos:
        if video.stem in stems:
            raise FeaturesError(
                f"--input={source}: {stems[video.stem].name} and {video.name} would both be "
                f"video v_{video.stem}; rename one"
            )
        stems[video.stem] = video
    return videos


@dataclasses.dataclass
class ExtractionReport:
    """What `extract_features` did.

    Attributes:
        written: Video ids (file stems) whose features were written by this run.
        skipped: Video ids already in the features file (written by an earlier run).
        failed: Video file -> why it could not be decoded (skipped).
        spec: How the features are made.
        seconds: Wall time of the run.
        frames: Frames decoded and embedded by this run.
    """

    written: list[str]
    skipped: list[str]
    failed: dict[str, str]
    spec: FeatureSpec
    seconds: float = 0.0
    frames: int = 0


def _write_json(path: pathlib.Path, values: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a file


def _written_lengths(h5_path: pathlib.Path) -> dict[str, dict[str, int]]:
    """`length.json` entries of the videos whose features are complete in the HDF5 file."""
    if not h5_path.exists():
        return {}
    try:
        with h5py.File(h5_path, "r") as h5:
            lengths = {}
            for group in h5:
                dataset = h5[group].get(DATASET_NAME)
                if group.startswith("v_") and dataset is not None and "n_frames" in dataset.attrs:
                    lengths[group[2:]] = {
                        "n_frames": int(dataset.attrs["n_frames"]),
                        "n_feat": int(dataset.shape[0]),
                    }
            return lengths
    except OSError as e:
        raise FeaturesError(f"{h5_path}: cannot read as HDF5 (truncated or corrupt?): {e}") from e


PARTS_DIR = ".parts"


def _save_part(output: pathlib.Path, video_id: str, features: np.ndarray, n_frames: int):
    """Saves one video's features on their own (`.parts/v_<id>.npz`), atomically."""
    parts = output / PARTS_DIR
    parts.mkdir(exist_ok=True)
    tmp = parts / f".v_{video_id}.npz.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, features=features, n_frames=np.int64(n_frames))
    tmp.replace(parts / f"v_{video_id}.npz")


def _merge_parts(output: pathlib.Path) -> int:
    """Adds the saved parts to `features.hdf5`, replacing the file whole; the number merged.

    The file's copy plus the parts are written to `.features.hdf5.tmp`, renamed over
    `features.hdf5` once complete; the parts are removed after. A kill at any point leaves
    either the old file and the parts, or the new file (and parts that are in it already).
    """
    parts = sorted((output / PARTS_DIR).glob("v_*.npz"))
    if not parts:
        return 0
    h5_path = output / FEATURES_FILE
    tmp = output / f".{FEATURES_FILE}.tmp"
    if h5_path.exists():
        shutil.copyfile(h5_path, tmp)
    else:
        tmp.unlink(missing_ok=True)
    with h5py.File(tmp, "a") as h5:
        for part in parts:
            with np.load(part) as values:
                if part.stem in h5:
                    del h5[part.stem]
                dataset = h5.create_dataset(f"{part.stem}/{DATASET_NAME}", data=values["features"])
                dataset.attrs["n_frames"] = int(values["n_frames"])  # marks the group complete
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(h5_path)
    for part in parts:
        part.unlink()
    return len(parts)


def extract_features(
    source: str | pathlib.Path,
    output: str | pathlib.Path,
    backbone: str | pathlib.Path | Backbone = DEFAULT_BACKBONE,
    frame_rate: float = FRAME_RATE,
    clip_length: int = CLIP_LENGTH,
    batch_size: int = 32,
    progress: bool = True,
) -> ExtractionReport:
    """Writes the features of a video file or of a folder's videos (see the module docstring).

    Args:
        source: A video file or a folder of them (not recursive).
        output: The folder of `features.hdf5`, `length.json` and `features.json`.
        backbone: A Keras application name, a `.keras` file, or a `Backbone`.
        frame_rate: Frames sampled per second.
        clip_length: Frames per feature row.
        batch_size: Frames per backbone call.
        progress: Whether to show progress bars (videos, and frames of the current one).

    Returns:
        An `ExtractionReport`.

    Raises:
        FeaturesError: Before any work, if the input has no video, the backbone cannot be
            loaded, or `output` holds features made another way.
    """
    import time

    started = time.perf_counter()
    if frame_rate <= 0 or clip_length < 1 or batch_size < 1:
        raise FeaturesError(
            f"frame_rate ({frame_rate}), clip_length ({clip_length}) and batch_size "
            f"({batch_size}) must be positive"
        )
    videos = find_videos(source)
    if not isinstance(backbone, Backbone):
        backbone = load_backbone(backbone)
    spec = backbone.spec(frame_rate, clip_length)
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    spec_path, h5_path = output / SPEC_FILE, output / FEATURES_FILE
    if spec_path.exists():
        differences = read_spec(spec_path).differences(spec)
        if differences:
            raise FeaturesError(
                f"{spec_path}: the features in {output} were made another way; this run's "
                f"{', '.join(differences)}; use another --output"
            )
    elif h5_path.exists():
        raise FeaturesError(
            f"{h5_path} exists without {SPEC_FILE}: features of unknown origin; use another "
            "--output"
        )
    _write_json(spec_path, spec.to_json())
    merged = _merge_parts(output)  # what a killed run saved
    if merged:
        logging.info("Added %d videos that an interrupted run had saved to %s.", merged, h5_path)
    lengths = _written_lengths(h5_path)
    _write_json(output / LENGTHS_FILE, lengths)

    report = ExtractionReport([], [], {}, spec)
    todo = [v for v in videos if v.stem not in lengths]
    report.skipped = [v.stem for v in videos if v.stem in lengths]
    if report.skipped:
        logging.info(
            "%d of %d videos are in %s already.", len(report.skipped), len(videos), h5_path
        )
    bar = tqdm.tqdm(todo, unit="video", desc="videos", disable=not progress, dynamic_ncols=True)
    try:
        _extract_each(
            bar, output, backbone, frame_rate, clip_length, batch_size, progress, report, lengths
        )
    finally:
        bar.close()
        _merge_parts(output)
        _write_json(output / LENGTHS_FILE, lengths)
    report.seconds = time.perf_counter() - started
    return report


def _extract_each(
    bar, output, backbone, frame_rate, clip_length, batch_size, progress, report, lengths
):
    """Extracts the videos of `bar`, saving each one's features as a part (`_save_part`) and
    its `length.json` entry in `lengths`."""
    for video in bar:
        bar.set_postfix_str(video.name)
        frames_bar = frames_progress(video, frame_rate, progress)
        try:
            features, n_frames = video_features(
                video, backbone, frame_rate, clip_length, batch_size, frames_bar.update
            )
        except VideoError as e:
            report.failed[str(video)] = str(e)
            logging.warning("Cannot decode %s (%s); skipped.", video, e)
            continue
        finally:
            frames_bar.close()
        _save_part(output, video.stem, features, n_frames)
        lengths[video.stem] = {"n_frames": n_frames, "n_feat": int(features.shape[0])}
        report.written.append(video.stem)
        report.frames += n_frames


def summary(report: ExtractionReport, output: str | pathlib.Path) -> str:
    """What a run did, for a person: counts, speed and the files skipped as undecodable."""
    text = (
        f"{len(report.written)} videos written, {len(report.skipped)} already there, "
        f"{len(report.failed)} could not be decoded; {pathlib.Path(output) / FEATURES_FILE} "
        f"(D = {report.spec.feature_dim}, {report.spec.seconds_per_feature:g} s a feature)"
    )
    if report.frames:
        text += f"; {report.frames} frames in {report.seconds:.1f} s"
        text += f" ({report.frames / max(report.seconds, 1e-9):.0f} frames/s)"
    for video, reason in report.failed.items():
        text += f"\n  skipped {video}: {reason}"
    return text
