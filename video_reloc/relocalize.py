"""One query against a reference of any length: overlapping windows merged by temporal NMS.

The model was trained on references of at most 300 features (`WINDOW`). A longer reference,
an hour of video being thousands of features, is cut into windows of that length every
`stride` features (the last window aligned to the reference's end), the windows are run in
batches through an exported SavedModel (or a Keras model), each window proposes its best
segments by Eq. (12), converted to indices of the whole reference, and temporal non-maximum
suppression keeps the best `top_k` that overlap each other by less than `nms_threshold` tIoU.
The work is one model call per window, so the cost grows linearly with the reference.

With the default stride of half a window, every segment of at most `window - stride`
features (the decoder's limit is 64) lies whole inside some window.

`relocalize_files` reads the query and the reference from feature files or from video files:
a video's features are made on the fly as the model's training features were made (the
`FeatureSpec` the export carries: backbone, frame rate, clip length), and features made
another way are refused. It can draw the reference's timeline with the top segments and the
per-step probabilities (averaged over the windows holding each step) as a PNG.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from video_reloc import features as video_features
from video_reloc.checkpoints import load_signature, saved_model_folder
from video_reloc.decode import MAX_SEGMENT_LENGTH, segment_scores
from video_reloc.errors import UserError
from video_reloc.export import read_feature_spec
from video_reloc.signature import SIGNATURE_NAME

WINDOW = 300  # the training references' longest length, in features
FRAMES_PER_FEATURE = 16  # C3D: 16 frames per feature after keeping every other HDF5 row
DEFAULT_FPS = 30.0
HDF5_SUFFIXES = (".h5", ".hdf5")

Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Segment:
    """A segment of the reference, `[start, end)` in features and in seconds.

    Attributes:
        start: First feature index.
        end: One past the last feature index.
        score: Log-score of Eq. (12) in the window that proposed it (higher is better).
        start_seconds: `start * seconds_per_feature`.
        end_seconds: `end * seconds_per_feature`.
    """

    start: int
    end: int
    score: float
    start_seconds: float
    end_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Relocalization:
    """The answer for one query and one reference.

    Attributes:
        segments: Up to `top_k` segments, best first.
        probabilities: `(Tr, 4)` per-step probabilities of (start, end, inside, outside),
            averaged over the windows that hold the step.
        seconds_per_feature: Seconds per reference step.
    """

    segments: list[Segment]
    probabilities: np.ndarray
    seconds_per_feature: float


def window_starts(steps: int, window: int = WINDOW, stride: int = WINDOW // 2) -> list[int]:
    """Starts of windows of `window` features every `stride`, the last one ending at `steps`.

    Args:
        steps: The reference's length.
        window: The window length.
        stride: The step between window starts (at most `window`, so windows cover all steps).

    Returns:
        Ascending starts; `[0]` if the reference is no longer than a window.
    """
    if not 0 < stride <= window:
        raise ValueError(f"stride must be within 1..window ({window}), got {stride}")
    if steps <= window:
        return [0]
    starts = list(range(0, steps - window + 1, stride))
    if starts[-1] != steps - window:
        starts.append(steps - window)
    return starts


def temporal_nms(
    starts: np.ndarray,
    ends: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.5,
    top_k: int | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression of `[start, end)` segments by tIoU.

    Args:
        starts, ends, scores: `(N,)` segments and their scores.
        threshold: A segment is dropped if its tIoU with a kept, better one exceeds this.
        top_k: Stop after keeping this many; `None` keeps all survivors.

    Returns:
        Indices of the kept segments, best first.
    """
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for index in order:
        if keep:
            kept = np.asarray(keep)
            inter = np.maximum(
                0, np.minimum(ends[kept], ends[index]) - np.maximum(starts[kept], starts[index])
            )
            union = np.maximum(ends[kept], ends[index]) - np.minimum(starts[kept], starts[index])
            if np.any(inter / np.maximum(union, 1) > threshold):
                continue
        keep.append(int(index))
        if top_k is not None and len(keep) >= top_k:
            break
    return np.asarray(keep, dtype=np.int64)


def load_predictor(model: Any) -> tuple[Predictor, int]:
    """A function from a batch to per-step probabilities, and the feature dimension D.

    Args:
        model: A SavedModel folder (a version folder, or a base folder whose highest numeric
            version is taken), a loaded SavedModel or its signature, or a Keras model of any
            architecture (`video_reloc.architectures`).

    Returns:
        `(predict, feature_dim)`: `predict(query, query_length, reference, reference_length)`
        takes numpy arrays `(B, Tq, D)`, `(B,)`, `(B, Tr, D)`, `(B,)` and returns
        probabilities `(B, Tr, 4)`.
    """
    if isinstance(model, str | pathlib.Path):
        model, _ = load_signature(model)
    if hasattr(model, "signatures") and SIGNATURE_NAME in getattr(model, "signatures", {}):
        model = model.signatures[SIGNATURE_NAME]
    if isinstance(model, tf.types.experimental.ConcreteFunction):
        signature = model
        feature_dim = int(signature.structured_input_signature[1]["query"].shape[-1])

        def predict(query, query_length, reference, reference_length):
            outputs = signature(
                query=tf.constant(query, tf.float32),
                query_length=tf.constant(query_length, tf.int32),
                reference=tf.constant(reference, tf.float32),
                reference_length=tf.constant(reference_length, tf.int32),
            )
            return outputs["probabilities"].numpy()

        return predict, feature_dim

    from video_reloc.architectures import model_feature_dim  # a Keras model: loaded already

    keras_model = model
    feature_dim = model_feature_dim(keras_model)

    @tf.function(reduce_retracing=True)
    def keras_probabilities(query, query_length, reference, reference_length):
        outputs = keras_model(
            {
                "query": query,
                "query_length": query_length,
                "reference": reference,
                "reference_length": reference_length,
            },
            training=False,
        )
        return tf.exp(outputs["log_probabilities"])

    def predict(query, query_length, reference, reference_length):
        return keras_probabilities(
            tf.constant(query, tf.float32),
            tf.constant(query_length, tf.int32),
            tf.constant(reference, tf.float32),
            tf.constant(reference_length, tf.int32),
        ).numpy()

    return predict, feature_dim


def _window_batches(
    reference: np.ndarray, starts: list[int], window: int, batch_size: int
) -> Iterator[tuple[list[int], np.ndarray]]:
    for first in range(0, len(starts), batch_size):
        chunk = starts[first : first + batch_size]
        yield chunk, np.stack([reference[s : s + window] for s in chunk])


def relocalize(
    model: Any, query: np.ndarray, reference: np.ndarray, **options: Any
) -> list[Segment]:
    """The `top_k` segments of `reference` that match `query` (`search`'s, without the
    probabilities; the same arguments)."""
    return search(model, query, reference, **options).segments


def search(
    model: Any,
    query: np.ndarray,
    reference: np.ndarray,
    top_k: int = 5,
    window: int = WINDOW,
    stride: int = WINDOW // 2,
    nms_threshold: float = 0.5,
    seconds_per_feature: float = FRAMES_PER_FEATURE / DEFAULT_FPS,
    batch_size: int = 64,
    candidates_per_window: int = 16,
    max_segment_length: int = MAX_SEGMENT_LENGTH,
) -> Relocalization:
    """Finds the `top_k` segments of `reference` that match `query`, for any reference length.

    Args:
        model: A SavedModel path, a loaded SavedModel or signature, a Keras model, or a
            predictor from `load_predictor` given as `(predict, feature_dim)`.
        query: `(Tq, D)` query features.
        reference: `(Tr, D)` reference features, any `Tr >= 1`.
        top_k: How many segments to return.
        window: Window length in features (the training references' length).
        stride: Features between window starts.
        nms_threshold: Segments overlapping a better one by more than this tIoU are dropped.
        seconds_per_feature: Seconds per feature (frames per feature / fps).
        batch_size: Windows per model call.
        candidates_per_window: Best segments each window proposes before the merge.
        max_segment_length: The longest segment, in features.

    Returns:
        A `Relocalization`: up to `top_k` segments, best first, in features and seconds of the
        whole reference, and the per-step probabilities.
    """
    predict, feature_dim = model if isinstance(model, tuple) else load_predictor(model)
    query = np.asarray(query, np.float32)
    reference = np.asarray(reference, np.float32)
    for name, array in (("query", query), ("reference", reference)):
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != feature_dim:
            raise ValueError(
                f"{name}: expected shape (steps >= 1, {feature_dim}), got {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: NaN or infinite values")
    steps = reference.shape[0]
    window = min(window, steps)
    starts = window_starts(steps, window, min(stride, window))
    candidate_starts, candidate_ends, candidate_scores = [], [], []
    probability_sum = np.zeros((steps, 4), np.float64)
    windows_per_step = np.zeros((steps, 1), np.float64)
    for chunk, windows in _window_batches(reference, starts, window, batch_size):
        count = len(chunk)
        probabilities = predict(
            np.broadcast_to(query, (count, *query.shape)),
            np.full((count,), query.shape[0], np.int32),
            windows,
            np.full((count,), window, np.int32),
        )
        for first, window_probabilities in zip(chunk, probabilities):
            probability_sum[first : first + window] += window_probabilities[:window]
            windows_per_step[first : first + window] += 1
        log_probabilities = np.log(np.maximum(probabilities, np.finfo(np.float32).tiny))
        scores = segment_scores(
            log_probabilities, np.full((count,), window, np.int32), max_segment_length
        )  # (count, L, window): segment [s, s + d] at [d, s]
        flat = tf.reshape(scores, (count, -1))
        k = min(candidates_per_window, int(flat.shape[1]))
        best_scores, best = tf.math.top_k(flat, k=k)
        best, best_scores = best.numpy(), best_scores.numpy()
        length_minus_one, start = best // window, best % window
        offsets = np.asarray(chunk)[:, None]
        valid = np.isfinite(best_scores)
        candidate_starts.append((start + offsets)[valid])
        candidate_ends.append((start + length_minus_one + 1 + offsets)[valid])
        candidate_scores.append(best_scores[valid])
    all_starts = np.concatenate(candidate_starts)
    all_ends = np.concatenate(candidate_ends)
    all_scores = np.concatenate(candidate_scores)
    keep = temporal_nms(all_starts, all_ends, all_scores, nms_threshold, top_k)
    segments = [
        Segment(
            start=int(all_starts[i]),
            end=int(all_ends[i]),
            score=float(all_scores[i]),
            start_seconds=float(all_starts[i] * seconds_per_feature),
            end_seconds=float(all_ends[i] * seconds_per_feature),
        )
        for i in keep
    ]
    probabilities = (probability_sum / np.maximum(windows_per_step, 1)).astype(np.float32)
    return Relocalization(segments, probabilities, float(seconds_per_feature))


def load_features(
    source: str | pathlib.Path,
    subsample: int | None = None,
    feature_name: str | None = "c3d_features",
    feature_range: tuple[int | None, int | None] | None = None,
) -> np.ndarray:
    """Reads a video's features from a `.npy` file or an HDF5 file in the ActivityNet layout.

    Args:
        source: `features.npy` (an array `(T, D)`), or `features.hdf5:VIDEO` for the dataset
            `feature_name` of group `VIDEO` (or `v_VIDEO`), as in ActivityNet's
            `sub_activitynet_v1-3.c3d.hdf5`.
        subsample: Keep every `subsample`-th row; `None` means 2 for HDF5 (ActivityNet's
            C3D rows come every 8 frames, the model's every 16) and 1 for `.npy`.
        feature_name: The HDF5 dataset name inside a video's group; `None`: its only one
            (the layout of `video-reloc-features`).
        feature_range: `(start, end)` rows to keep after subsampling (a query cut from a
            longer video); `None` keeps all.

    Returns:
        `(T, D)` float32 features.
    """
    text = str(source)
    path, _, video = text.rpartition(":")
    if path.lower().endswith(HDF5_SUFFIXES) and video:
        import h5py  # only HDF5 sources need it

        with h5py.File(path, "r") as h5:
            group = video if video in h5 else f"v_{video}"
            if group not in h5:
                raise KeyError(f"{path}: no group {video!r} nor 'v_{video}'")
            names = list(h5[group])
            if feature_name is None and len(names) == 1:
                feature_name = names[0]
            if feature_name not in names:
                raise KeyError(f"{path}: group {group!r} has no dataset {feature_name!r}")
            features = h5[group][feature_name][()]
        default_subsample = 2
    elif text.lower().endswith(HDF5_SUFFIXES):
        raise ValueError(f"{text}: name the video, as in {text}:VIDEO_ID")
    else:
        try:
            features = np.load(text, allow_pickle=False)
        except (ValueError, OSError) as e:  # pickled data, text, a truncated file
            raise ValueError(f"{text}: not a NumPy array file (.npy): {e}") from None
        default_subsample = 1
    features = np.asarray(features, np.float32)[:: subsample or default_subsample]
    if feature_range is not None:
        features = features[slice(*feature_range)]
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(
            f"{text}: expected features of shape (steps >= 1, D), got {features.shape}"
        )
    return features


def parse_feature_range(text: str | None) -> tuple[int | None, int | None] | None:
    """`"START:END"` (either may be empty) to `(start, end)`; `None` or `""` to `None`."""
    if not text:
        return None
    start, colon, end = text.partition(":")
    try:
        if not colon:
            raise ValueError
        return (int(start) if start else None, int(end) if end else None)
    except ValueError:
        raise ValueError(f"expected START:END feature indices, got {text!r}") from None


@dataclasses.dataclass
class _Input:
    """A query or reference read by `relocalize_files`."""

    features: np.ndarray
    spec: video_features.FeatureSpec | None  # how its features were made, when known
    duration: float | None = None  # seconds of video, for a video file


class _FeatureMaker:
    """Makes video files' features as the model's were made (its `FeatureSpec`), once loaded."""

    def __init__(
        self,
        spec: Mapping[str, Any] | None,
        model: str,
        backbone: str | None,
        progress: bool = True,
    ):
        self.spec = None if spec is None else video_features.FeatureSpec.from_json(spec)
        self.model = model
        self.backbone_path = backbone
        self.progress = progress
        self._backbone = None

    def __call__(self, flag: str, path: pathlib.Path) -> _Input:
        if self.spec is None:
            raise ValueError(
                f"{flag}={path}: a video file needs a model trained on features of "
                f"video-reloc-features, and --model={self.model} does not say how its features "
                "were made; pass features (FILE.npy or FILE.hdf5:VIDEO)"
            )
        if self._backbone is None:
            backbone = video_features.load_backbone(self.backbone_path or self.spec.backbone)
            differences = self.spec.differences(
                backbone.spec(self.spec.frame_rate, self.spec.clip_length)
            )
            if differences:
                raise ValueError(
                    f"backbone {backbone.name} differs from the one the model was trained with "
                    f"({self.spec.backbone}): {', '.join(differences)}"
                )
            self._backbone = backbone
        bar = video_features.frames_progress(path, self.spec.frame_rate, self.progress)
        try:
            rows, frames = video_features.video_features(
                path,
                self._backbone,
                self.spec.frame_rate,
                self.spec.clip_length,
                on_frames=bar.update,
            )
        except video_features.VideoError as e:
            raise ValueError(f"{flag}={path}: cannot decode the video: {e}") from e
        finally:
            bar.close()
        return _Input(rows, self.spec, frames / self.spec.frame_rate)


def _read_input(
    field: str,
    source: str,
    make_features: _FeatureMaker,
    subsample: int | None,
    feature_name: str | None,
) -> _Input:
    """Features of `--query`/`--reference`: a feature file, or a video file made into features.

    Raises:
        UserError: A missing or unreadable file (`field` names the flag).
    """
    path, _, video = source.rpartition(":")
    if not (path.lower().endswith(HDF5_SUFFIXES) and video):
        path = source
    file = pathlib.Path(path)
    if file.suffix.lower() not in (".npy", *HDF5_SUFFIXES):
        if not file.is_file():
            raise UserError(f"{source}: no such file", field=field)
        return make_features(f"--{field}", file)
    spec = None
    spec_path = file.parent / video_features.SPEC_FILE
    if file.suffix.lower() in HDF5_SUFFIXES and spec_path.exists():
        spec = video_features.read_spec(spec_path)  # features of video-reloc-features
        subsample = subsample or 1
        feature_name = None
    return _Input(read_features(field, source, subsample, feature_name), spec)


def _check_same_features(flag: str, source: str, made: _Input, model_spec) -> None:
    """Refuses features made another way than the model's; warns when that cannot be told."""
    if made.spec is not None and model_spec is not None:
        differences = model_spec.differences(made.spec)
        if differences:
            raise ValueError(
                f"{flag}={source}: features made another way than the model's: "
                f"{', '.join(differences)}"
            )
    elif (made.spec is None) != (model_spec is None):
        logging.warning(
            "%s=%s: cannot tell whether its features were made as the model's (%s).",
            flag,
            source,
            "the model does not say" if model_spec is None else "the features do not say",
        )


def relocalize_files(
    model: str,
    query: str,
    reference: str,
    top_k: int = 5,
    window: int = WINDOW,
    stride: int = WINDOW // 2,
    nms_threshold: float = 0.5,
    fps: float = DEFAULT_FPS,
    frames_per_feature: int = FRAMES_PER_FEATURE,
    subsample: int | None = None,
    feature_name: str = "c3d_features",
    query_range: str | tuple[int | None, int | None] | None = None,
    batch_size: int = 64,
    backbone: str | None = None,
    plot: str | pathlib.Path | None = None,
    progress: bool = True,
) -> Relocalization:
    """`relocalize` on feature files or video files (the console script's function).

    Args:
        model: A SavedModel base or version folder.
        query: The query: features (`.npy` or `file.hdf5:VIDEO`) or a video file.
        reference: The reference: features or a video file.
        top_k: How many segments to return.
        window: Window length in features.
        stride: Features between window starts.
        nms_threshold: tIoU above which a worse segment is dropped.
        fps: The videos' frame rate, for seconds of feature files without a `features.json`.
        frames_per_feature: Frames per (kept) feature, for the same.
        subsample: Keep every `subsample`-th feature row (see `load_features`); features of
            `video-reloc-features` (an HDF5 file with `features.json` beside it) keep all.
        feature_name: The HDF5 dataset name (C3D layout).
        query_range: `(start, end)` or `"START:END"`: features of the query video to use.
        batch_size: Windows per model call.
        backbone: Where the backbone the model was trained with is now (a `.keras` file moved
            since); `None`: as the model records it. Its weights must be the same.
        plot: A PNG file to draw the reference's timeline with the segments and the per-step
            probabilities into; `None`: no figure.
        progress: Whether to show a progress bar of the frames of each video file.

    Returns:
        A `Relocalization`: up to `top_k` segments, best first, in features and seconds of
        the reference (a video reference's seconds are its own), and the probabilities.

    Raises:
        UserError: An option out of range, or a file, video or model that cannot be read or
            features made another way than the model's; its `field` names the argument.
    """
    check_options(top_k, window, stride, nms_threshold, fps, frames_per_feature, batch_size)
    if subsample is not None and subsample < 1:
        raise UserError(f"must be at least 1, got {subsample}", field="subsample")
    if isinstance(query_range, str):
        try:
            query_range = parse_feature_range(query_range)
        except ValueError as e:
            raise UserError(str(e), field="query_range") from None
    folder = _model_folder(model)
    raw_spec = read_feature_spec(folder)
    make_features = _FeatureMaker(raw_spec, model, backbone, progress)
    model_spec = make_features.spec
    inputs = {}
    for field, source in (("query", query), ("reference", reference)):
        made = _read_input(field, source, make_features, subsample, feature_name)
        _check_same_features(f"--{field}", source, made, model_spec)
        inputs[field] = made
    query_features = cut_query(inputs["query"].features, query_range)
    made = inputs["reference"]
    seconds = made.spec.seconds_per_feature if made.spec else frames_per_feature / fps
    result = search(
        folder,
        query_features,
        made.features,
        top_k=top_k,
        window=window,
        stride=stride,
        nms_threshold=nms_threshold,
        seconds_per_feature=seconds,
        batch_size=batch_size,
    )
    if made.duration is not None:  # the last clip may be short: end within the video
        result.segments = [
            dataclasses.replace(s, end_seconds=min(s.end_seconds, made.duration))
            for s in result.segments
        ]
    if plot:
        draw(result, plot, title=f"{pathlib.Path(query).name} in {pathlib.Path(reference).name}")
    return result


def draw(result: Relocalization, path: str | pathlib.Path, title: str | None = None):
    """Draws the reference's timeline with the segments and the probabilities into a PNG."""
    from video_reloc import visualize

    figure = visualize.timeline_figure(
        len(result.probabilities),
        result.seconds_per_feature,
        result.probabilities,
        predictions=[(s.start, s.end) for s in result.segments],
        prediction_labels=[
            f"#{k + 1}  {s.start_seconds:.1f}-{s.end_seconds:.1f} s"
            for k, s in enumerate(result.segments)
        ],
        title=title,
    )
    return visualize.save_figure(figure, path)


def check_options(
    top_k: int,
    window: int,
    stride: int,
    nms_threshold: float,
    fps: float,
    frames_per_feature: int,
    batch_size: int,
) -> None:
    """Refuses options of `relocalize_files` out of their range, naming the option.

    Raises:
        UserError: The first option out of range (its `field` is the option's name).
    """
    for name, value in (
        ("top_k", top_k),
        ("window", window),
        ("frames_per_feature", frames_per_feature),
        ("batch_size", batch_size),
    ):
        if value < 1:
            raise UserError(f"must be at least 1, got {value}", field=name)
    if not 1 <= stride <= window:
        raise UserError(f"must be within 1..--window ({window}), got {stride}", field="stride")
    if not 0.0 <= nms_threshold <= 1.0:
        raise UserError(f"must be within 0..1, got {nms_threshold}", field="nms_threshold")
    if not fps > 0:
        raise UserError(f"must be positive, got {fps:g}", field="fps")


def cut_query(
    features: np.ndarray, feature_range: tuple[int | None, int | None] | None
) -> np.ndarray:
    """The rows `feature_range` (`START:END`, end exclusive) of a query video's features.

    Raises:
        UserError: A range that is empty or not within the video's features.
    """
    if feature_range is None:
        return features
    steps = len(features)
    start, end = feature_range
    start = 0 if start is None else start
    end = steps if end is None else end
    text = f"{feature_range[0] if feature_range[0] is not None else ''}:"
    text += f"{feature_range[1] if feature_range[1] is not None else ''}"
    if not 0 <= start < end:
        raise UserError(f"{text}: expected 0 <= START < END", field="query_range")
    if end > steps:
        raise UserError(f"{text} is not within the {steps} features of the query", "query_range")
    return features[start:end]


def read_features(
    field: str, source: str, subsample: int | None, feature_name: str = "c3d_features"
) -> np.ndarray:
    """`load_features`, with a file that cannot be read reported as the `field`'s fault.

    Raises:
        UserError: A missing or unreadable file, video or dataset (`field` names the option).
    """
    hdf5_path, _, video = source.rpartition(":")
    path = hdf5_path if hdf5_path.lower().endswith(HDF5_SUFFIXES) and video else source
    if not pathlib.Path(path).is_file():
        raise UserError(f"{path}: no such file", field=field)
    try:
        return load_features(source, subsample, feature_name)
    except KeyError as e:
        raise UserError(str(e.args[0]), field=field) from None
    except (ValueError, OSError) as e:
        raise UserError(str(e), field=field) from None


def _model_folder(model: str) -> pathlib.Path:
    """`saved_model_folder` of `--model`, with a path that holds no SavedModel its fault."""
    if not pathlib.Path(model).exists():
        raise UserError(f"{model}: no such file or folder", field="model")
    try:
        return saved_model_folder(model)
    except FileNotFoundError as e:
        raise UserError(str(e), field="model") from None
