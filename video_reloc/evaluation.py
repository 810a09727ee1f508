"""Evaluation of a model, a checkpoint or a SavedModel on fixed pairs: predictions and the table.

`evaluate(EvaluateConfig(...))` is the library function of `video-reloc-evaluate`: it loads the
model (`load_predictor`), predicts the top-1 segment of every pair of a split (Eq. 12, at most
64 features), scores the predictions at tIoU 0.1 ... 0.9 (`metrics.accuracy_at_thresholds`),
prints the paper's table next to the chance baseline on the same pairs and writes the JSON
`{"0.1": ..., ..., "0.9": ..., "mean": ...}` (percent, `mean` over tIoU 0.5 ... 0.9).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from video_reloc import architectures, data, visualize
from video_reloc.baselines.chance import ChanceBaseline
from video_reloc.checkpoints import (
    BEST_DIR,
    EXPORT_DIR,
    MODEL_CONFIG_FILE,
    RESULTS_DIR,
    checkpoint_candidates,
    find_model_dir,
    is_saved_model,
    latest_saved_model,
    load_checkpoint_model,
    load_signature,
    read_train_config,
    write_json,
)
from video_reloc.decode import MAX_SEGMENT_LENGTH, decode_segments
from video_reloc.errors import UserError
from video_reloc.metrics import PAPER_TABLE1, accuracy_at_thresholds, format_table, temporal_iou
from video_reloc.model import VideoRelocModel
from video_reloc.signature import input_signature

logger = logging.getLogger(__name__)

CHANCE_SEED = 0

# inputs (see `data.pad_batch`) -> (start, end, score), each `(B,)`. The predict functions
# made here also carry `.outputs`, an `OutputsFn` of the same model (for figures).
BatchPredictFn = Callable[[Mapping[str, Any]], tuple[Any, Any, Any]]
# inputs -> numpy `start`, `end`, `score` `(B,)`, `probabilities` `(B, Tr, 4)` and `attention`
# `(B, Tr, Tq)`: the serving signature's outputs.
OutputsFn = Callable[[Mapping[str, Any]], dict[str, np.ndarray]]
PLOTS = 4  # pairs drawn by `evaluate --plots`


def model_feature_dim(model: VideoRelocModel) -> int:
    """D of a built model of any architecture."""
    return architectures.model_feature_dim(model)


def keras_predict_fn(
    model: VideoRelocModel, max_segment_length: int = MAX_SEGMENT_LENGTH
) -> BatchPredictFn:
    """A traced function: padded inputs -> `(start, end, score)` of a Keras model."""

    @tf.function(input_signature=[input_signature(model_feature_dim(model))])
    def predict(inputs):
        log_probabilities = model(inputs, training=False)["log_probabilities"]
        return decode_segments(log_probabilities, inputs["reference_length"], max_segment_length)

    predict.outputs = keras_outputs_fn(model, max_segment_length)
    return predict


def keras_outputs_fn(
    model: VideoRelocModel, max_segment_length: int = MAX_SEGMENT_LENGTH
) -> OutputsFn:
    """A traced function: padded inputs -> the signature's outputs, of a Keras model."""

    @tf.function(input_signature=[input_signature(model_feature_dim(model))])
    def outputs(inputs):
        result = model(inputs, training=False, return_attention=True)
        log_probabilities = result["log_probabilities"]
        start, end, score = decode_segments(
            log_probabilities, inputs["reference_length"], max_segment_length
        )
        return {
            "start": start,
            "end": end,
            "score": score,
            "probabilities": tf.exp(log_probabilities),
            "attention": result["attention"],
        }

    return lambda inputs: {key: value.numpy() for key, value in outputs(inputs).items()}


def saved_model_predict_fn(path: str | pathlib.Path) -> BatchPredictFn:
    """The `serving_default` signature of a SavedModel as a `BatchPredictFn`."""
    serve, loaded = load_signature(path)

    def outputs(inputs):
        tensors = serve(**{key: tf.convert_to_tensor(value) for key, value in inputs.items()})
        return {key: value.numpy() for key, value in tensors.items()}

    def predict(inputs):
        result = serve(**{key: tf.convert_to_tensor(value) for key, value in inputs.items()})
        return result["start"], result["end"], result["score"]

    predict.loaded = loaded  # keeps the SavedModel's resources alive
    predict.outputs = outputs
    return predict


def pair_titles(examples: data.Examples, outputs: Mapping[str, np.ndarray]) -> list[str]:
    """A title per pair: the query (video and seconds) and reference videos, and the tIoU."""
    predicted = np.stack([outputs["start"], outputs["end"]], axis=1)
    iou = temporal_iou(predicted, examples.groundtruth)
    titles = []
    for n in range(len(examples)):
        where = ""
        if examples.query_id:
            query = examples.query_id[n]
            if (
                examples.query_location is not None
                and examples.query_seconds_per_feature is not None
            ):
                start, end = examples.query_location[n] * examples.query_seconds_per_feature[n]
                query += f" {start:.1f}-{end:.1f} s"
            where = f"query {query} in reference {examples.reference_id[n]}, "
        titles.append(f"{where}tIoU {iou[n]:.2f}")
    return titles


def pair_figures(outputs_fn: OutputsFn, examples: data.Examples) -> list[tuple[Any, Any]]:
    """The timeline (Fig. 4) and attention (Fig. 5) figures of every pair of `examples`."""
    inputs, groundtruth = data.pad_batch(examples.query, examples.reference, examples.groundtruth)
    outputs = outputs_fn(inputs)
    return visualize.pair_figures(
        outputs,
        inputs,
        groundtruth,
        examples.reference_seconds_per_feature,
        examples.query_seconds_per_feature,
        titles=pair_titles(examples, outputs),
    )


def write_plots(
    outputs_fn: OutputsFn, examples: data.Examples, directory: str | pathlib.Path
) -> list[pathlib.Path]:
    """Writes `pair_NNN_timeline.png` and `pair_NNN_attention.png` for every pair."""
    directory = pathlib.Path(directory)
    paths = []
    for n, (timeline, attention) in enumerate(pair_figures(outputs_fn, examples)):
        paths.append(visualize.save_figure(timeline, directory / f"pair_{n:03d}_timeline.png"))
        paths.append(visualize.save_figure(attention, directory / f"pair_{n:03d}_attention.png"))
    return paths


@dataclasses.dataclass
class Predictions:
    """Top-1 predictions of every pair of a split.

    Attributes:
        segments: `(N, 2)` int32 predicted [start, end) in the references.
        score: `(N,)` float32 log-score of Eq. (12).
        iou: `(N,)` float64 tIoU with the ground truth.
    """

    segments: np.ndarray
    score: np.ndarray
    iou: np.ndarray

    def to_json(self, examples: data.Examples) -> list[dict[str, Any]]:
        """One record per pair: ids, ground truth, prediction, score and tIoU."""
        records = []
        for n in range(len(self.segments)):
            record = {
                "groundtruth": examples.groundtruth[n].tolist(),
                "prediction": self.segments[n].tolist(),
                "score": float(self.score[n]),
                "iou": float(self.iou[n]),
            }
            if examples.query_id:
                record["query_id"] = examples.query_id[n]
                record["reference_id"] = examples.reference_id[n]
            if examples.reference_location is not None:
                record["reference_location"] = examples.reference_location[n].tolist()
            records.append(record)
        return records


def predict(
    predict_fn: BatchPredictFn, examples: data.Examples, batch_size: int = 64
) -> Predictions:
    """Predicts the top-1 segment of every pair.

    Args:
        predict_fn: Padded inputs -> `(start, end, score)` (`keras_predict_fn`,
            `saved_model_predict_fn`).
        examples: Fixed (query, reference) pairs.
        batch_size: Pairs per batch.

    Returns:
        `Predictions` of the pairs, in order.
    """
    segments, scores = [], []
    for inputs, _ in data.evaluation_batches(examples, batch_size):
        start, end, score = predict_fn(inputs)
        segments.append(np.stack([np.asarray(start), np.asarray(end)], axis=1))
        scores.append(np.asarray(score))
    segments = np.concatenate(segments).astype(np.int32)
    return Predictions(
        segments, np.concatenate(scores), temporal_iou(segments, examples.groundtruth)
    )


def chance_results(examples: data.Examples, seed: int = CHANCE_SEED) -> dict[str, float]:
    """The chance baseline on the same pairs: a uniformly random segment of <= 64 features."""
    segments = ChanceBaseline(seed=seed).sample(examples.reference_lengths)
    return accuracy_at_thresholds(temporal_iou(segments, examples.groundtruth))


class ModelPredictor:
    """A trained model as a `video_reloc.baselines.SegmentPredictor` (unpadded lists in).

    Args:
        predict_fn: A `BatchPredictFn`, or a Keras model (wrapped by `keras_predict_fn`).
        batch_size: Pairs per batch.
    """

    def __init__(self, predict_fn: BatchPredictFn | VideoRelocModel, batch_size: int = 64):
        if isinstance(predict_fn, keras.Model):
            predict_fn = keras_predict_fn(predict_fn)
        self.predict_fn = predict_fn
        self.batch_size = batch_size

    def predict(
        self, queries: Sequence[np.ndarray], references: Sequence[np.ndarray]
    ) -> np.ndarray:
        """`(N, 2)` int32 [start, end) of each query in its reference."""
        examples = data.Examples(
            query=list(queries),
            reference=list(references),
            groundtruth=np.zeros((len(queries), 2), np.int32),
            label=np.zeros((len(queries),), np.int64),
        )
        return predict(self.predict_fn, examples, self.batch_size).segments


def load_predict_fn(path: str | pathlib.Path) -> tuple[BatchPredictFn, str]:
    """A `BatchPredictFn` from a SavedModel, an export base, a checkpoint or a model dir.

    A model dir means its best model: `export/<latest>` when exported, else `best/`, else its
    latest checkpoint.

    Returns:
        `(predict_fn, description)` where the description names what was loaded.
    """
    path = pathlib.Path(path)
    if not (path.exists() or path.with_name(f"{path.name}.index").exists()):
        raise UserError(f"{path}: no such file or folder", field="model")
    if is_saved_model(path):
        return saved_model_predict_fn(path), f"SavedModel {path}"
    latest = latest_saved_model(path) if path.is_dir() else None
    if latest is None and path.is_dir() and (path / MODEL_CONFIG_FILE).exists():
        latest = latest_saved_model(path / EXPORT_DIR)
        if latest is None and checkpoint_candidates(path / BEST_DIR):
            path = path / BEST_DIR
    if latest is not None:
        return saved_model_predict_fn(latest), f"SavedModel {latest}"
    if path.is_dir() and not checkpoint_candidates(path) and find_model_dir(path) is None:
        raise UserError(
            f"{path}: no SavedModel, version folder, checkpoint or model dir here", field="model"
        )
    model, prefix = load_checkpoint_model(path, field="model")
    return keras_predict_fn(model), f"checkpoint {prefix}"


# The `evaluate` binary.


@dataclasses.dataclass
class EvaluateConfig:
    """What `evaluate` evaluates, on what, and where it writes.

    Attributes:
        model: A SavedModel folder, an export base (its latest version), a checkpoint prefix,
            or a model dir (its export, else `best/`, else its latest checkpoint).
        split: The split to evaluate on (`test`, `validation`).
        dataset: `activitynet_reloc/CONFIG`; `None`: the one the model was trained on
            (recorded in its model dir), else `activitynet_reloc/synthetic`.
        data_dir: The TFDS data dir; `None`: the one recorded in the model dir, else TFDS's
            default.
        manual_dir: Manual files of config `c3d` when the dataset is not built yet.
        batch_size: Pairs per batch.
        output: Where to write the table as JSON; `None`: `MODEL_DIR/results/evaluate_SPLIT.json`
            when the model is in a model dir of training, else nowhere.
        predictions_output: Where to write the per-pair predictions as JSON; `None`: do not.
        plots: A folder for the figures (timeline and attention, PNG) of the first
            `num_plots` pairs; `None`: none.
        num_plots: Pairs drawn into `plots`.
    """

    model: str
    split: str = "test"
    dataset: str | None = None
    data_dir: str | None = None
    manual_dir: str | None = None
    batch_size: int = 64
    output: str | None = None
    predictions_output: str | None = None
    plots: str | None = None
    num_plots: int = PLOTS


@dataclasses.dataclass
class EvaluationResult:
    """What `evaluate` found.

    Attributes:
        results: `{"0.1": ..., ..., "0.9": ..., "mean": ...}` of the model, in percent.
        chance: The same for the chance baseline on the same pairs.
        predictions: The model's per-pair predictions.
        table: The Markdown table printed.
    """

    results: dict[str, float]
    chance: dict[str, float]
    predictions: Predictions
    table: str


def results_table(
    results: Mapping[str, float], chance: Mapping[str, float], dataset: str, name: str = "Ours"
) -> str:
    """The paper's table of `results` and chance (with Table 1's rows on ActivityNet data)."""
    paper = None
    if "c3d" in dataset:
        paper = {key: PAPER_TABLE1[key] for key in ("Chance", "Ours")}
    return format_table({name: results, "Chance (same pairs)": chance}, paper=paper)


def evaluate(config: EvaluateConfig) -> EvaluationResult:
    """Evaluates a SavedModel or a checkpoint on a split, prints the table and writes JSON.

    Args:
        config: What to evaluate (`EvaluateConfig`).

    Returns:
        An `EvaluationResult`.

    Raises:
        UserError: A `model` that holds no model, or a batch size below 1.
    """
    if config.batch_size < 1:
        raise UserError(f"must be at least 1, got {config.batch_size}", field="batch_size")
    predict_fn, what = load_predict_fn(config.model)  # a wrong --model fails before the data
    model_dir = find_model_dir(config.model)
    recorded = read_train_config(model_dir) if model_dir is not None else {}
    dataset = config.dataset or recorded.get("dataset") or data.DEFAULT_DATASET
    data_dir = config.data_dir or recorded.get("data_dir")
    examples = data.load_split(config.split, dataset, data_dir, config.manual_dir)
    logger.info("Evaluating %s on %s %s (%d pairs).", what, dataset, config.split, len(examples))
    predictions = predict(predict_fn, examples, config.batch_size)
    results = accuracy_at_thresholds(predictions.iou)
    chance = chance_results(examples)
    table = results_table(results, chance, dataset)
    print(f"{what}, {dataset} {config.split} ({len(examples)} pairs):\n{table}", flush=True)
    output = config.output
    if output is None and model_dir is not None:
        output = model_dir / RESULTS_DIR / f"evaluate_{config.split}.json"
    if output:
        write_json(output, results)
        print(f"Wrote {output}", flush=True)
    if config.predictions_output:
        path = pathlib.Path(config.predictions_output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(predictions.to_json(examples), indent=1) + "\n")
    if config.plots:
        subset = examples.subset(range(min(config.num_plots, len(examples))))
        paths = write_plots(predict_fn.outputs, subset, config.plots)
        print(f"Wrote {len(paths)} figures of {len(subset)} pairs to {config.plots}", flush=True)
    return EvaluationResult(results, chance, predictions, table)
