"""Training: strategy, the custom loop, checkpoints, TensorBoard, validation, test and export.

`train(TrainConfig(...))` is the library function of `video-reloc-train`. It

1. picks a `tf.distribute` strategy (`make_strategy`): one device, `MirroredStrategy` over
   every GPU (or logical CPU), or `MultiWorkerMirroredStrategy` from `TF_CONFIG`;
2. reads the TFDS dataset (building it first if needed) and streams bucketed training pairs
   (`video_reloc.data.TrainingStream`), a pure function of the seed;
3. runs the loop of the original release: Adam, gradients clipped to a global norm of 5, the
   loss of Eq. (11) averaged over the valid steps of the global batch;
4. saves a checkpoint (model, optimizer, step, best validation score) every
   `checkpoint_every` steps in `model_dir`, and resumes from the latest good one (a partial or
   corrupt latest checkpoint falls back to the previous one with a warning). The data stream
   skips the batches already trained on, so nothing before the checkpoint is redone;
5. evaluates on validation every `eval_every` steps, keeping the best model in
   `model_dir/best/`; writes TensorBoard summaries to `model_dir/train` and
   `model_dir/validation` (loss, gradient norm, learning rate, accuracy at every tIoU, images
   of segments on the reference timeline and of the attention map);
6. at the end evaluates the best model on test (`model_dir/results/test.json`), prints the
   paper's table beside the chance baseline, and exports the best model as a SavedModel under
   `model_dir/export/<version>/`.

Distributed arithmetic: each replica computes the sum of Eq. (11) over its valid steps and
divides by the valid steps of the whole global batch (an all-reduce), so the summed loss and
gradients equal one device's on the same batch. Gradients are all-reduced and clipped here
(Keras would clip each replica's part before summing), then handed to the optimizer divided by
the replica count, since Keras sums them over replicas once more. Dropout masks are drawn per
replica, so only a model without dropout gives bit-for-bit the same losses on any replica count.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
import time
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tqdm
from absl import logging

from video_reloc import architectures, data, evaluation, visualize
from video_reloc.export import export_saved_model
from video_reloc.losses import localization_loss_sum
from video_reloc.metrics import accuracy_at_thresholds, temporal_iou
from video_reloc.model import VideoRelocModel

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
FEATURE_SPEC_FILE = "features.json"  # in a model dir: how the features were made, when known
MODEL_FIELDS = (
    "feature_dim",
    "architecture",
    "ablation",
    "units",
    "bilinear_rank",
    "encoder_dropout",
    "matching_dropout",
    "normalization",
)


@dataclasses.dataclass
class TrainConfig:
    """Everything `train` needs. The defaults are the original release's (`--preset=paper`).

    Attributes:
        model_dir: Checkpoints, summaries, the best model, results and the export go here.
        dataset: `activitynet_reloc/CONFIG`.
        data_dir: The TFDS data dir (`None`: TFDS's default).
        manual_dir: Manual files of config `c3d`, used when the dataset is not built yet.
        train_steps: Steps to train in all (a resumed run continues up to it).
        batch_size: Pairs per global batch (split over the replicas).
        learning_rate: Adam's learning rate.
        clip_norm: Gradients are clipped to this global norm.
        architecture: The model: `cgbm` (the paper's) or `parallel` (no loop over time).
        ablation: The Table 2 variant of the architecture (`cgbm`: `full`, `base`,
            `base_cross_gating`, `base_bilinear`; `parallel`: see `PARALLEL_ABLATIONS`).
        units: Hidden size l.
        bilinear_rank: Rank k of the factorized bilinear matching.
        encoder_dropout: Dropout rate after the encoder (keep 0.6).
        matching_dropout: Dropout rate after the matching (keep 0.8).
        normalization: `None` (the paper) or a `FeatureNormalization` mode applied to each
            query and reference inside the model (`standardize`, `center`).
        crop_probability: Probability of cropping a training reference's context.
        distractor_probability: Probability that a training reference also holds windows of
            other classes (`data.add_distractors`; 0 in the original release).
        bucket_span: Reference lengths per training bucket.
        seed: Seed of the weights, the pair draws and dropout.
        strategy: `auto`, `one_device`, `mirrored` or `multi_worker` (see `make_strategy`).
        checkpoint_every: Steps between checkpoints (one is also saved at the end).
        keep_checkpoints: Checkpoints kept in `model_dir`.
        eval_every: Steps between validations (one also runs at the end).
        eval_batch_size: Pairs per batch when evaluating.
        summary_every: Steps between training summaries.
        num_images: Validation pairs drawn in the TensorBoard images.
        test: Whether to evaluate the best model on test at the end.
        export: Whether to export the best model as a SavedModel at the end.
        progress: Whether to show a progress bar.
    """

    model_dir: str
    dataset: str = "activitynet_reloc/c3d"
    data_dir: str | None = None
    manual_dir: str | None = None
    train_steps: int = 1000
    batch_size: int = 128
    learning_rate: float = 1e-3
    clip_norm: float = 5.0
    architecture: str = architectures.DEFAULT_ARCHITECTURE
    ablation: str = "full"
    units: int = 128
    bilinear_rank: int = 8
    encoder_dropout: float = 0.4
    matching_dropout: float = 0.2
    normalization: str | None = None
    crop_probability: float = data.CROP_PROBABILITY
    distractor_probability: float = 0.0
    bucket_span: int = data.BUCKET_SPAN
    seed: int = 0
    strategy: str = "auto"
    checkpoint_every: int = 100
    keep_checkpoints: int = 5
    eval_every: int = 100
    eval_batch_size: int = 64
    summary_every: int = 10
    num_images: int = 4
    test: bool = True
    export: bool = True
    progress: bool = True

    def __post_init__(self):
        architectures.check_architecture(self.architecture)
        choices = architectures.ablations(self.architecture)
        if self.ablation not in choices:
            raise ValueError(
                f"ablation must be one of {sorted(choices)} for architecture "
                f"{self.architecture}, got {self.ablation!r}"
            )
        if self.architecture == "parallel" and self.normalization is not None:
            raise ValueError(
                f"normalization applies to architecture cgbm, got {self.normalization!r} for "
                "architecture parallel, which normalizes its inputs itself"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("train_steps", "batch_size", "checkpoint_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


# Presets: `paper` is the original release's schedule on ActivityNet (the dataclass defaults);
# `synthetic`, the main job, a smaller model and batch that learns the embedded synthetic data
# in a few minutes on a 2-core CPU; `parallel`, the parallel model (no loop over time) and its
# schedule, on any dataset (`--dataset`).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "synthetic": {
        "dataset": data.DEFAULT_DATASET,
        "train_steps": 500,
        "batch_size": 32,
        "units": 64,
        "checkpoint_every": 50,
        "eval_every": 50,
    },
    "parallel": {
        "dataset": data.DEFAULT_DATASET,
        "architecture": "parallel",
        "train_steps": 500,
        "batch_size": 64,
        "units": 64,
        "checkpoint_every": 50,
        "eval_every": 50,
    },
}


def preset_config(preset: str = "synthetic", **overrides: Any) -> TrainConfig:
    """A `TrainConfig` of a preset with some fields replaced.

    Args:
        preset: A key of `PRESETS`.
        **overrides: `TrainConfig` fields; those that are `None` are ignored.

    Returns:
        The configuration.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    fields = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**fields)


@dataclasses.dataclass
class TrainResult:
    """What `train` did.

    Attributes:
        start_step: The step training (re)started from (0 for a fresh run).
        step: The last step trained.
        best_step: The step of the best validation score (-1 if never validated).
        validation: The best validation results (`accuracy_at_thresholds`), if any.
        test: The best model's test results, when `config.test`.
        chance: The chance baseline on the same test pairs, when `config.test`.
        export_path: The SavedModel written, when `config.export` (on the chief).
        model: The best model (a plain, undistributed Keras model), on the chief.
        trained_model: The model as trained, at the last step (under the strategy).
        losses: The training loss of each step run by this call.
        num_replicas: Replicas in sync.
    """

    start_step: int
    step: int
    best_step: int
    validation: dict[str, float] | None = None
    test: dict[str, float] | None = None
    chance: dict[str, float] | None = None
    export_path: pathlib.Path | None = None
    model: VideoRelocModel | None = None
    trained_model: VideoRelocModel | None = None
    losses: list[float] = dataclasses.field(default_factory=list)
    num_replicas: int = 1


def _cluster_size() -> int:
    """Tasks of `TF_CONFIG`'s cluster that train (chief and workers); 1 without TF_CONFIG."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")) or 1


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The distribution strategy; make it before any other TensorFlow op.

    Args:
        name: `one_device` (the first GPU, else the CPU); `mirrored` (`MirroredStrategy`
            over every GPU, else over every logical CPU device); `multi_worker`
            (`MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`); `auto` (`multi_worker`
            when `TF_CONFIG` names several tasks, `mirrored` with several GPUs, else
            `one_device`).

    Returns:
        A `tf.distribute.Strategy`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        if _cluster_size() > 1:
            name = "multi_worker"
        else:
            name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")


def _worker_dir(strategy: tf.distribute.Strategy, model_dir: pathlib.Path) -> pathlib.Path:
    """Where this worker writes checkpoints: `model_dir` on the chief, a temp folder elsewhere.

    Every worker of a `MultiWorkerMirroredStrategy` must save (saving may run collectives);
    only the chief's copy is kept.
    """
    if strategy.extended.should_checkpoint:
        return model_dir
    task = getattr(strategy.cluster_resolver, "task_id", 0)
    return model_dir / f".worker_{task}"


def model_config(config: TrainConfig, feature_dim: int) -> dict[str, Any]:
    """What `model_config.json` records: the model's fields of `config`, for D = `feature_dim`."""
    values = dataclasses.asdict(config)
    return {"feature_dim": feature_dim, **{k: values[k] for k in MODEL_FIELDS[1:]}}


def _write_configs(config: TrainConfig, model_dir: pathlib.Path, fields: dict) -> None:
    """Records the model's and the run's configuration; refuses a different model."""
    path = model_dir / evaluation.MODEL_CONFIG_FILE
    if path.exists():
        recorded = evaluation.read_model_config(model_dir)
        recorded.setdefault("architecture", architectures.DEFAULT_ARCHITECTURE)
        if recorded != fields:
            raise ValueError(
                f"{model_dir} holds a model of another configuration ({recorded}), not "
                f"{fields}; use another --model_dir."
            )
    evaluation.write_results(path, fields)
    evaluation.write_results(model_dir / evaluation.TRAIN_CONFIG_FILE, dataclasses.asdict(config))


def make_replica_step(
    model: VideoRelocModel, optimizer: keras.optimizers.Optimizer, clip_norm: float
):
    """One replica's training step, for `strategy.run(step, args=(inputs, groundtruth))`.

    The replica's loss is its sum of Eq. (11) divided by the valid steps of the global batch;
    gradients are summed over the replicas, clipped to `clip_norm` and applied (as equal shares,
    since Keras sums them over the replicas again).

    Args:
        model: The model (made under the strategy's scope).
        optimizer: Its optimizer (made under the scope, without clipping of its own).
        clip_norm: The global norm gradients are clipped to.

    Returns:
        `replica_step(inputs, groundtruth) -> (loss share, global gradient norm)`.
    """

    def replica_step(inputs, groundtruth):
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss_sum, count = localization_loss_sum(
                outputs["log_probabilities"], groundtruth, inputs["reference_length"]
            )
            global_count = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(count))
            loss = loss_sum / tf.maximum(global_count, 1.0)
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        gradients, norm = tf.clip_by_global_norm(gradients, clip_norm)
        replicas = float(context.num_replicas_in_sync)
        # Keras sums the gradients over the replicas again: hand it equal shares.
        optimizer.apply([g / replicas for g in gradients], variables)
        return loss, norm

    return replica_step


def distribute_batch(
    strategy: tf.distribute.Strategy, batch: tuple[Mapping[str, np.ndarray], np.ndarray]
):
    """A global batch as per-replica tensors: replica r gets the r-th of equal slices.

    Args:
        strategy: The strategy; its replica count must divide the batch size.
        batch: `(inputs, groundtruth)` of a whole global batch (see `data.pad_batch`).

    Returns:
        `(inputs, groundtruth)` as distributed values for `strategy.run`.
    """
    inputs, groundtruth = batch
    per_replica = len(groundtruth) // strategy.num_replicas_in_sync

    def value_fn(context: tf.distribute.ValueContext):
        rows = slice(
            context.replica_id_in_sync_group * per_replica,
            (context.replica_id_in_sync_group + 1) * per_replica,
        )
        return (
            {key: tf.constant(value[rows]) for key, value in inputs.items()},
            tf.constant(groundtruth[rows]),
        )

    return strategy.experimental_distribute_values_from_function(value_fn)


def _image_writer(model: VideoRelocModel, examples: data.Examples):
    """A function writing the timeline (Fig. 4) and attention (Fig. 5) figures of `examples`."""
    outputs_fn = evaluation.keras_outputs_fn(model)

    def write(step: int) -> None:
        figures = evaluation.pair_figures(outputs_fn, examples)
        for name, index in (("segments_on_timeline", 0), ("attention", 1)):
            images = np.stack([visualize.figure_image(pair[index]) for pair in figures])
            tf.summary.image(name, images, step=step, max_outputs=len(images))

    return write


def train(config: TrainConfig, examples: Mapping[str, data.Examples] | None = None) -> TrainResult:
    """Trains (or resumes training) a model, validates, tests and exports it.

    Args:
        config: The run (`TrainConfig`, `preset_config`).
        examples: Optional splits already in memory (`train`, `validation`, optionally
            `test`); the dataset is read for those missing.

    Returns:
        A `TrainResult`.
    """
    strategy = make_strategy(config.strategy)  # before any other op (multi-worker needs it)
    chief = strategy.extended.should_checkpoint
    model_dir = pathlib.Path(config.model_dir)
    write_dir = _worker_dir(strategy, model_dir)
    write_dir.mkdir(parents=True, exist_ok=True)
    logging.info(
        "Strategy %s with %d replica(s).", type(strategy).__name__, strategy.num_replicas_in_sync
    )

    splits = dict(examples or {})
    builder = None
    for split in ("train", "validation"):
        if split not in splits:
            if builder is None:
                builder = data.dataset_builder(config.dataset, config.data_dir, config.manual_dir)
            splits[split] = data.load_split(split, builder=builder)
    train_examples, validation = splits["train"], splits["validation"]
    feature_dim = train_examples.feature_dim
    model_fields = model_config(config, feature_dim)
    if chief:
        _write_configs(config, model_dir, model_fields)
        spec = data.feature_spec(builder) if builder is not None else None
        if spec is not None:
            evaluation.write_results(model_dir / FEATURE_SPEC_FILE, spec)

    with strategy.scope():
        model = architectures.build_from_config(model_fields, seed=config.seed)
        optimizer = keras.optimizers.Adam(config.learning_rate)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        best_mean = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_mean")
        best_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_step")
    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=optimizer, step=step, best_mean=best_mean, best_step=best_step
    )
    candidates = evaluation.checkpoint_candidates(model_dir)
    if candidates:
        restored = evaluation.restore_first_good(checkpoint, candidates)
        if restored is None:
            raise ValueError(
                f"No readable checkpoint in {model_dir} ({candidates}); move the folder away "
                "to start afresh."
            )
        logging.info("Resumed from checkpoint %s at step %d.", restored, int(step.numpy()))
    start_step = int(step.numpy())
    manager = tf.train.CheckpointManager(
        checkpoint, str(write_dir), max_to_keep=config.keep_checkpoints, checkpoint_name="ckpt"
    )
    best_manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model), str(write_dir / "best"), max_to_keep=1
    )

    if chief:
        train_writer = tf.summary.create_file_writer(str(model_dir / "train"))
        validation_writer = tf.summary.create_file_writer(str(model_dir / "validation"))
    else:
        train_writer = validation_writer = tf.summary.create_noop_writer()

    stream = data.TrainingStream(
        train_examples,
        config.batch_size,
        seed=config.seed,
        crop_probability=config.crop_probability,
        bucket_span=config.bucket_span,
        distractor_probability=config.distractor_probability,
    )
    replicas = strategy.num_replicas_in_sync

    if config.batch_size % replicas:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {replicas} replicas.")

    replica_step = make_replica_step(model, optimizer, config.clip_norm)

    @tf.function(reduce_retracing=True)
    def train_step(inputs, groundtruth):
        loss, norm = strategy.run(replica_step, args=(inputs, groundtruth))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.MEAN, norm, axis=None),
        )

    predict_fn = evaluation.keras_predict_fn(model)
    num_images = min(config.num_images, len(validation)) if chief else 0
    if num_images:
        write_images = _image_writer(model, validation.subset(range(num_images)))

    def validate(n: int) -> None:
        predictions = evaluation.predict(predict_fn, validation, config.eval_batch_size)
        results = accuracy_at_thresholds(predictions.iou)
        with validation_writer.as_default():
            for key, value in results.items():
                tf.summary.scalar(f"accuracy/{key}", value, step=n)
            tf.summary.scalar("mean_iou", float(np.mean(predictions.iou)), step=n)
            if num_images:
                write_images(n)
        improved = results["mean"] > float(best_mean.numpy())
        if improved:
            best_mean.assign(results["mean"])
            best_step.assign(n)
            best_manager.save(checkpoint_number=n)
            if chief:
                evaluation.write_results(
                    model_dir / "results" / "validation.json", {**results, "step": n}
                )
        logging.info(
            "Step %d validation: mean %.1f (tIoU 0.5 %.1f)%s.",
            n,
            results["mean"],
            results["0.5"],
            ", best so far" if improved else "",
        )

    if start_step < config.train_steps:
        # Batches are fed from numpy rather than through tf.data: the stream is cheap to make,
        # and tearing down a generator-backed distributed iterator stalled for up to 30 s.
        batches = stream.batches(skip=start_step)
        bar = tqdm.tqdm(
            total=config.train_steps,
            initial=start_step,
            unit="step",
            desc="train",
            disable=not (chief and config.progress),
            dynamic_ncols=True,
        )
        started = time.perf_counter()
        losses = []
        for n in range(start_step + 1, config.train_steps + 1):
            loss, norm = train_step(*distribute_batch(strategy, next(batches)))
            loss = float(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(f"The loss is {loss} at step {n}.")
            losses.append(loss)
            step.assign(n)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", best=f"{float(best_mean.numpy()):.1f}")
            if n % config.summary_every == 0 or n == config.train_steps:
                with train_writer.as_default():
                    tf.summary.scalar("loss", loss, step=n)
                    tf.summary.scalar("gradient_norm", float(norm), step=n)
                    learning_rate = tf.convert_to_tensor(optimizer.learning_rate.value)
                    tf.summary.scalar("learning_rate", float(learning_rate), step=n)
                    elapsed = time.perf_counter() - started
                    tf.summary.scalar(
                        "pairs_per_second", (n - start_step) * config.batch_size / elapsed, step=n
                    )
            if n % config.eval_every == 0 or n == config.train_steps:
                validate(n)
            if n % config.checkpoint_every == 0 or n == config.train_steps:
                manager.save(checkpoint_number=n)
        bar.close()
        train_writer.flush()
        validation_writer.flush()
        logging.info(
            "Traced the training step %d time(s).", train_step.experimental_get_tracing_count()
        )
    else:
        losses = []
    final_step = int(step.numpy())

    result = TrainResult(
        start_step,
        final_step,
        int(best_step.numpy()),
        trained_model=model,
        losses=losses,
        num_replicas=replicas,
    )
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
        return result

    # The best model, as a plain (undistributed) Keras model.
    best = evaluation.model_from_config(model_fields)
    if evaluation.restore_first_good(
        tf.train.Checkpoint(model=best), evaluation.checkpoint_candidates(model_dir / "best")
    ):
        path = model_dir / "results" / "validation.json"
        if path.exists():
            result.validation = json.loads(path.read_text())
    else:
        logging.warning("No best model in %s; using the last weights.", model_dir / "best")
        best.set_weights(model.get_weights())
    result.model = best

    if config.test:
        test = splits.get("test")
        if test is None:
            test = data.load_split("test", config.dataset, config.data_dir, config.manual_dir)
        predictions = evaluation.predict(
            evaluation.keras_predict_fn(best), test, config.eval_batch_size
        )
        result.test = accuracy_at_thresholds(temporal_iou(predictions.segments, test.groundtruth))
        result.chance = evaluation.chance_results(test)
        evaluation.write_results(model_dir / "results" / "test.json", result.test)
        evaluation.write_results(model_dir / "results" / "test_chance.json", result.chance)
        print(
            f"Test, {config.dataset} ({len(test)} pairs), best model of step {result.best_step}:\n"
            + evaluation.results_table(result.test, result.chance, config.dataset),
            flush=True,
        )

    if config.export:
        result.export_path = _export_once(best, model_dir, result.best_step)
    return result


def recorded_feature_spec(model_dir: pathlib.Path) -> dict[str, Any] | None:
    """How the features of the model in `model_dir` were made, when training recorded it."""
    path = model_dir / FEATURE_SPEC_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _export_once(model: VideoRelocModel, model_dir: pathlib.Path, best_step: int) -> pathlib.Path:
    """Exports the best model under `model_dir/export/`, unless this best is exported already."""
    record = model_dir / "results" / "export.json"
    if record.exists():
        done = json.loads(record.read_text())
        if done.get("best_step") == best_step and evaluation.is_saved_model(done.get("path", "")):
            logging.info("The best model (step %d) is exported already: %s", best_step, done)
            return pathlib.Path(done["path"])
    path = export_saved_model(
        model, model_dir / "export", feature_spec=recorded_feature_spec(model_dir)
    )
    evaluation.write_results(record, {"best_step": best_step, "path": str(path)})
    logging.info("Exported the best model (step %d) to %s.", best_step, path)
    print(f"SavedModel: {path}", flush=True)
    return path


# The `export` binary.


@dataclasses.dataclass
class ExportConfig:
    """What `export_checkpoint` exports, and where.

    Attributes:
        checkpoint: A checkpoint prefix, or a folder of checkpoints (a model dir: its latest
            good checkpoint; `MODEL_DIR/best`: the best model).
        export_dir: The SavedModel base; `None`: `MODEL_DIR/export`.
        version: The version folder; `None`: the next free number.
    """

    checkpoint: str
    export_dir: str | None = None
    version: int | None = None


def export_checkpoint(config: ExportConfig) -> pathlib.Path:
    """Exports a training checkpoint as a SavedModel (`serving_default` signature).

    Args:
        config: What and where (`ExportConfig`).

    Returns:
        The SavedModel folder written (`EXPORT_DIR/<version>/`).
    """
    model, prefix = evaluation.load_checkpoint_model(config.checkpoint)
    model_dir = evaluation.find_model_dir(pathlib.Path(prefix).parent)
    export_dir = config.export_dir
    if export_dir is None:
        export_dir = model_dir / "export"
    spec = recorded_feature_spec(model_dir) if model_dir is not None else None
    path = export_saved_model(model, export_dir, config.version, feature_spec=spec)
    print(f"Exported {prefix} to {path}", flush=True)
    return path
