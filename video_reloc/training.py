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
import logging
import math
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf
import tqdm

from video_reloc import architectures, checkpoints, data, evaluation, visualize
from video_reloc.errors import UserError
from video_reloc.export import export_saved_model
from video_reloc.layers.feature_normalization import MODES as NORMALIZATIONS
from video_reloc.losses import localization_loss_sum
from video_reloc.metrics import accuracy_at_thresholds, temporal_iou
from video_reloc.model import VideoRelocModel
from video_reloc.signature import input_signature

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
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
        dataset: The TFDS dataset, `activitynet_reloc/CONFIG` (`c3d`, `synthetic`,
            `simulated_c3d`, or `custom`: your own data in `manual_dir`).
        data_dir: The TFDS data dir (`None`: TFDS's default, ~/tensorflow_datasets).
        manual_dir: Folder of the raw files of config `c3d` or `custom` (annotations,
            length.json, features), handed to the builder when the dataset is not built yet.
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
        strategy: `auto`: `multi_worker` when TF_CONFIG names several tasks, `mirrored` with
            several GPUs, else `one_device`; `mirrored`: MirroredStrategy over all GPUs (or
            logical CPUs); `multi_worker`: MultiWorkerMirroredStrategy from TF_CONFIG.
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

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "architecture": tuple(sorted(architectures.ARCHITECTURES)),
        "ablation": tuple(
            sorted({name for a in architectures.ARCHITECTURES.values() for name in a.ablations})
        ),
        "normalization": NORMALIZATIONS,
        "strategy": STRATEGIES,
    }
    """The values a field may take, where they are few (the binary's enum flags)."""

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
        for name, allowed in self.CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise UserError(f"{name} must be one of {list(allowed)}, got {value!r}", name)
        choices = architectures.ablations(self.architecture)
        if self.ablation not in choices:
            raise UserError(
                f"must be one of {sorted(choices)} for architecture {self.architecture}, got "
                f"{self.ablation!r}",
                field="ablation",
            )
        if self.architecture == "parallel" and self.normalization is not None:
            raise UserError(
                f"applies to architecture cgbm, got {self.normalization!r} for architecture "
                "parallel, which normalizes its inputs itself",
                field="normalization",
            )
        for name in (
            "train_steps",
            "batch_size",
            "checkpoint_every",
            "eval_every",
            "eval_batch_size",
            "summary_every",
            "bucket_span",
            "keep_checkpoints",
            "units",
            "bilinear_rank",
        ):
            if getattr(self, name) < 1:
                raise UserError(f"must be at least 1, got {getattr(self, name)}", field=name)
        if pathlib.Path(self.model_dir).is_file():
            raise UserError(f"{self.model_dir} is a file, not a folder", field="model_dir")


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
        raise UserError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}", "preset")
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
    """The model builder's arguments in `config`, for D = `feature_dim` (`build_from_config`)."""
    values = dataclasses.asdict(config)
    return {"feature_dim": feature_dim, **{k: values[k] for k in MODEL_FIELDS[1:]}}


def _write_configs(
    config: TrainConfig, model_dir: pathlib.Path, fields: Mapping[str, Any], record: dict
) -> None:
    """Records the model's (`record`) and the run's configuration; refuses a different model.

    `fields` are the builder's arguments that made the model, compared with a record of the
    older kind, which held them instead of the model's configuration.
    """
    path = model_dir / checkpoints.MODEL_CONFIG_FILE
    if path.exists():
        recorded = checkpoints.read_model_config(model_dir)
        if "model" in recorded:
            differs, ours = recorded != record, record
        else:
            recorded.setdefault("architecture", architectures.DEFAULT_ARCHITECTURE)
            differs, ours = recorded != dict(fields), dict(fields)
        if differs:
            changes = _differences(recorded, ours)
            raise UserError(
                f"{model_dir} holds a model of another configuration ({changes}); "
                "use another model dir",
                field="model_dir",
            )
    checkpoints.write_json(path, record)
    checkpoints.write_json(model_dir / checkpoints.TRAIN_CONFIG_FILE, dataclasses.asdict(config))


def _differences(recorded: Mapping[str, Any], ours: Mapping[str, Any]) -> str:
    """`key: RECORDED recorded, OURS now` for each (nested) entry that differs."""

    def flat(values, prefix=""):
        items = {}
        for key, value in values.items():
            if isinstance(value, Mapping):
                items.update(flat(value, f"{prefix}{key}."))
            else:
                items[f"{prefix}{key}"] = value
        return items

    a, b = flat(recorded), flat(ours)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} recorded, {b.get(k)!r} now" for k in keys)


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


def _step_signature(strategy: tf.distribute.Strategy, model: keras.Model) -> list:
    """The training step's input signature, free in the batch and time dimensions.

    Every batch pads its queries and references to its own lengths; with this signature the
    step is traced once instead of again for each new pair of lengths. Several replicas get
    distributed values, which a `TensorSpec` does not describe: their signature is the element
    spec of a distributed dataset of such batches (made for its spec, never iterated).
    """
    signature = (
        input_signature(architectures.model_feature_dim(model)),
        tf.TensorSpec((None, 2), tf.int32, name="groundtruth"),
    )
    if strategy.num_replicas_in_sync == 1:
        return list(signature)
    dataset = tf.data.Dataset.from_generator(lambda: iter(()), output_signature=signature)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    distributed = strategy.experimental_distribute_dataset(dataset.with_options(options))
    return list(distributed.element_spec)


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

    The steps: the strategy; the data (`_load_splits`); the model, optimizer and counters
    (`_build_state`); the model dir's records (`_write_configs`: the model's own
    configuration, `architectures.model_record`); the state restored from the latest good
    checkpoint (`_restore`); the loop with its summaries, validations
    (`_Validator`) and checkpoints (`_train_loop`); on the chief, the best model
    (`_best_model`), its test results (`_test`) and its export (`_export_once`).

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
    logger.info(
        "Strategy %s with %d replica(s).", type(strategy).__name__, strategy.num_replicas_in_sync
    )
    if config.batch_size % strategy.num_replicas_in_sync:
        raise UserError(
            f"{config.batch_size} is not divisible by {strategy.num_replicas_in_sync} replicas",
            field="batch_size",
        )

    splits, builder = _load_splits(config, examples)
    model_fields = model_config(config, splits["train"].feature_dim)
    state = _build_state(config, strategy, model_fields)
    record = architectures.model_record(state.model)
    if chief:
        _write_configs(config, model_dir, model_fields, record)
        spec = data.feature_spec(builder) if builder is not None else None
        if spec is not None:
            checkpoints.write_json(model_dir / checkpoints.FEATURE_SPEC_FILE, spec)
    start_step = _restore(state, model_dir)
    if chief:
        train_writer = tf.summary.create_file_writer(str(model_dir / "train"))
        validation_writer = tf.summary.create_file_writer(str(model_dir / "validation"))
    else:
        train_writer = validation_writer = tf.summary.create_noop_writer()
    validator = _Validator(
        config, state, splits["validation"], write_dir, model_dir, chief, validation_writer
    )
    losses = _train_loop(
        config, strategy, state, splits["train"], validator, write_dir, train_writer, start_step
    )
    validation_writer.flush()

    result = TrainResult(
        start_step,
        int(state.step.numpy()),
        int(state.best_step.numpy()),
        trained_model=state.model,
        losses=losses,
        num_replicas=strategy.num_replicas_in_sync,
    )
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
        return result
    result.model, result.validation = _best_model(record, state.model, model_dir)
    if config.test:
        result.test, result.chance = _test(
            config, result.model, splits, model_dir, result.best_step
        )
    if config.export:
        result.export_path = _export_once(result.model, model_dir, result.best_step)
    return result


def _load_splits(
    config: TrainConfig, examples: Mapping[str, data.Examples] | None
) -> tuple[dict[str, data.Examples], Any]:
    """The `train` and `validation` splits (and `test` if given), and the TFDS builder if read."""
    splits = dict(examples or {})
    builder = None
    for split in ("train", "validation"):
        if split not in splits:
            if builder is None:
                builder = data.dataset_builder(config.dataset, config.data_dir, config.manual_dir)
            splits[split] = data.load_split(split, builder=builder)
    return splits, builder


@dataclasses.dataclass
class _TrainState:
    """What a checkpoint holds: the model, the optimizer, the step and the best score so far."""

    model: VideoRelocModel
    optimizer: keras.optimizers.Optimizer
    step: tf.Variable
    best_mean: tf.Variable
    best_step: tf.Variable

    @property
    def checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            step=self.step,
            best_mean=self.best_mean,
            best_step=self.best_step,
        )


def _build_state(
    config: TrainConfig, strategy: tf.distribute.Strategy, model_fields: Mapping[str, Any]
) -> _TrainState:
    """A fresh model, its optimizer (built) and the counters, under the strategy."""
    with strategy.scope():
        model = architectures.build_from_config(model_fields, seed=config.seed)
        optimizer = keras.optimizers.Adam(config.learning_rate)
        optimizer.build(model.trainable_variables)
        return _TrainState(
            model,
            optimizer,
            step=tf.Variable(0, dtype=tf.int64, trainable=False, name="step"),
            best_mean=tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_mean"),
            best_step=tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_step"),
        )


def _restore(state: _TrainState, model_dir: pathlib.Path) -> int:
    """Restores the latest good checkpoint of `model_dir`, if any; returns the step to go on from.

    Raises:
        UserError: The model dir has checkpoints and none of them reads.
    """
    candidates = checkpoints.checkpoint_candidates(model_dir)
    if candidates:
        restored = checkpoints.restore_first_good(state.checkpoint, candidates)
        if restored is None:
            raise UserError(
                f"no readable checkpoint in {model_dir} ({candidates}); move the folder away "
                "to start afresh",
                field="model_dir",
            )
        logger.info("Resumed from checkpoint %s at step %d.", restored, int(state.step.numpy()))
    return int(state.step.numpy())


class _Validator:
    """Validates the model at a step: summaries, images, and the best model kept on improving."""

    def __init__(
        self,
        config: TrainConfig,
        state: _TrainState,
        validation: data.Examples,
        write_dir: pathlib.Path,
        model_dir: pathlib.Path,
        chief: bool,
        writer: Any,
    ):
        self.config, self.state, self.validation = config, state, validation
        self.model_dir, self.chief, self.writer = model_dir, chief, writer
        self.predict_fn = evaluation.keras_predict_fn(state.model)
        self.best_manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=state.model), str(write_dir / "best"), max_to_keep=1
        )
        self.num_images = min(config.num_images, len(validation)) if chief else 0
        if self.num_images:
            self.write_images = _image_writer(
                state.model, validation.subset(range(self.num_images))
            )

    def __call__(self, n: int) -> None:
        predictions = evaluation.predict(
            self.predict_fn, self.validation, self.config.eval_batch_size
        )
        results = accuracy_at_thresholds(predictions.iou)
        with self.writer.as_default():
            for key, value in results.items():
                tf.summary.scalar(f"accuracy/{key}", value, step=n)
            tf.summary.scalar("mean_iou", float(np.mean(predictions.iou)), step=n)
            if self.num_images:
                self.write_images(n)
        improved = results["mean"] > float(self.state.best_mean.numpy())
        if improved:
            self.state.best_mean.assign(results["mean"])
            self.state.best_step.assign(n)
            self.best_manager.save(checkpoint_number=n)
            if self.chief:
                checkpoints.write_json(
                    self.model_dir / "results" / "validation.json", {**results, "step": n}
                )
        logger.info(
            "Step %d validation: mean %.1f (tIoU 0.5 %.1f)%s.",
            n,
            results["mean"],
            results["0.5"],
            ", best so far" if improved else "",
        )


def _train_loop(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    state: _TrainState,
    train_examples: data.Examples,
    validate: Callable[[int], None],
    write_dir: pathlib.Path,
    writer: Any,
    start_step: int,
) -> list[float]:
    """Trains from `start_step` to `config.train_steps`; returns the loss of each step run.

    Writes the training summaries every `summary_every` steps, validates every `eval_every`
    and saves a checkpoint every `checkpoint_every` (and all three at the last step).
    """
    if start_step >= config.train_steps:
        return []
    manager = tf.train.CheckpointManager(
        state.checkpoint,
        str(write_dir),
        max_to_keep=config.keep_checkpoints,
        checkpoint_name="ckpt",
    )
    replica_step = make_replica_step(state.model, state.optimizer, config.clip_norm)

    @tf.function(input_signature=_step_signature(strategy, state.model))
    def train_step(inputs, groundtruth):
        loss, norm = strategy.run(replica_step, args=(inputs, groundtruth))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.MEAN, norm, axis=None),
        )

    stream = data.TrainingStream(
        train_examples,
        config.batch_size,
        seed=config.seed,
        crop_probability=config.crop_probability,
        bucket_span=config.bucket_span,
        distractor_probability=config.distractor_probability,
    )
    # Batches are fed from numpy rather than through tf.data: the stream is cheap to make, and
    # tearing down a generator-backed distributed iterator stalled for up to 30 s.
    batches = stream.batches(skip=start_step)
    bar = tqdm.tqdm(
        total=config.train_steps,
        initial=start_step,
        unit="step",
        desc="train",
        disable=not (strategy.extended.should_checkpoint and config.progress),
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
        state.step.assign(n)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", best=f"{float(state.best_mean.numpy()):.1f}")
        last = n == config.train_steps
        if n % config.summary_every == 0 or last:
            with writer.as_default():
                tf.summary.scalar("loss", loss, step=n)
                tf.summary.scalar("gradient_norm", float(norm), step=n)
                learning_rate = tf.convert_to_tensor(state.optimizer.learning_rate.value)
                tf.summary.scalar("learning_rate", float(learning_rate), step=n)
                elapsed = time.perf_counter() - started
                tf.summary.scalar(
                    "pairs_per_second", (n - start_step) * config.batch_size / elapsed, step=n
                )
        if n % config.eval_every == 0 or last:
            validate(n)
        if n % config.checkpoint_every == 0 or last:
            manager.save(checkpoint_number=n)
    bar.close()
    writer.flush()
    logger.info("Traced the training step %d time(s).", train_step.experimental_get_tracing_count())
    return losses


def _best_model(
    record: Mapping[str, Any], model: VideoRelocModel, model_dir: pathlib.Path
) -> tuple[VideoRelocModel, dict[str, float] | None]:
    """The best model as a plain (undistributed) Keras model, and its validation results.

    Falls back to `model`'s weights when no best model was saved.
    """
    best = checkpoints.model_from_config(record)
    best_dir = model_dir / checkpoints.BEST_DIR
    if checkpoints.restore_first_good(
        tf.train.Checkpoint(model=best), checkpoints.checkpoint_candidates(best_dir)
    ):
        path = model_dir / checkpoints.RESULTS_DIR / "validation.json"
        return best, (json.loads(path.read_text()) if path.exists() else None)
    logger.warning("No best model in %s; using the last weights.", best_dir)
    best.set_weights(model.get_weights())
    return best, None


def _test(
    config: TrainConfig,
    best: VideoRelocModel,
    splits: Mapping[str, data.Examples],
    model_dir: pathlib.Path,
    best_step: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """The best model's test results and the chance baseline's; writes and prints them."""
    test = splits.get("test")
    if test is None:
        test = data.load_split("test", config.dataset, config.data_dir, config.manual_dir)
    predictions = evaluation.predict(
        evaluation.keras_predict_fn(best), test, config.eval_batch_size
    )
    results = accuracy_at_thresholds(temporal_iou(predictions.segments, test.groundtruth))
    chance = evaluation.chance_results(test)
    checkpoints.write_json(model_dir / checkpoints.RESULTS_DIR / "test.json", results)
    checkpoints.write_json(model_dir / checkpoints.RESULTS_DIR / "test_chance.json", chance)
    print(
        f"Test, {config.dataset} ({len(test)} pairs), best model of step {best_step}:\n"
        + evaluation.results_table(results, chance, config.dataset),
        flush=True,
    )
    return results, chance


def _export_once(model: VideoRelocModel, model_dir: pathlib.Path, best_step: int) -> pathlib.Path:
    """Exports the best model under `model_dir/export/`, unless this best is exported already."""
    record = model_dir / "results" / "export.json"
    if record.exists():
        done = json.loads(record.read_text())
        if done.get("best_step") == best_step and checkpoints.is_saved_model(done.get("path", "")):
            logger.info("The best model (step %d) is exported already: %s", best_step, done)
            return pathlib.Path(done["path"])
    path = export_saved_model(
        model,
        model_dir / checkpoints.EXPORT_DIR,
        feature_spec=checkpoints.recorded_feature_spec(model_dir),
    )
    checkpoints.write_json(record, {"best_step": best_step, "path": str(path)})
    logger.info("Exported the best model (step %d) to %s.", best_step, path)
    print(f"SavedModel: {path}", flush=True)
    return path


# The `export` binary.
