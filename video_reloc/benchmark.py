"""Table 1 and Table 2 of the paper on any dataset config, in one call.

`run_benchmark` trains and evaluates every row on the test split:

- Table 1: `Chance`, `Frame-level baseline`, `Frame-level baseline (normalized)` (the same
  matching on features standardized per video), `Video-level baseline` (the baselines of
  `video_reloc.baselines`) and `Ours` (the full model); SST is quoted from the paper. On
  request (`rows`), `Ours, parallel`: the parallel model (`video_reloc.parallel_model`, no loop
  over time) with its own preset (`parallel`).
- Table 2: `Base`, `Base + cross gating`, `Base + bilinear` and `Ours`: the model's ablation
  switches (`video_reloc.model.ABLATIONS`), trained with the same schedule.

Every row is the per-threshold object of `video_reloc.metrics.accuracy_at_thresholds`
(`{"0.1": ..., ..., "0.9": ..., "mean": ...}`, percent, `mean` over tIoU 0.5 ... 0.9). With
`seeds > 1` the trained rows (video-level baseline and every model) are trained once per seed
(`first_seed`, `first_seed + 1`, ...) and the row holds the mean over the seeds of every figure
plus `"std"`: the same keys with the sample standard deviation (ddof = 1) over the seeds. The
chance row uses one fixed seed and the frame-level baseline is deterministic.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from video_reloc import evaluation, training
from video_reloc.baselines import (
    ChanceBaseline,
    FrameLevelBaseline,
    SegmentPredictor,
    VideoLevelBaseline,
)
from video_reloc.data import DEFAULT_DATASET, Examples, load_split
from video_reloc.errors import UserError
from video_reloc.metrics import (
    PAPER_TABLE1,
    PAPER_TABLE2,
    accuracy_at_thresholds,
    format_table,
    temporal_iou,
)

logger = logging.getLogger(__name__)

OURS = "Ours"
PARALLEL = "Ours, parallel"
FRAME_LEVEL_NORMALIZED = "Frame-level baseline (normalized)"
TABLE1_BASELINES = (
    "Chance",
    "Frame-level baseline",
    FRAME_LEVEL_NORMALIZED,
    "Video-level baseline",
)
TABLE1_ROWS = (*TABLE1_BASELINES, OURS, PARALLEL)
DEFAULT_ROWS = (*TABLE1_BASELINES, OURS)  # Table 1's rows run by default (then Table 2's)
# Row of Table 2 -> the model's ablation switch.
TABLE2_ABLATIONS = {
    "Base": "base",
    "Base + cross gating": "base_cross_gating",
    "Base + bilinear": "base_bilinear",
    OURS: "full",
}
TABLE2_ROWS = tuple(TABLE2_ABLATIONS)
QUOTED_ROWS = ("SST",)  # rows of the paper not re-run here: only their figure is printed

# (ablation, seed, train examples, validation examples) -> a trained predictor.
ModelTrainer = Callable[[str, int, Examples, Examples], SegmentPredictor]


@dataclasses.dataclass
class BenchmarkConfig:
    """What `run_benchmark` runs.

    Attributes:
        dataset: TFDS name `activitynet_reloc/CONFIG`.
        output_dir: Where `tables.md`, `table1.json` and `table2.json` go (`None`: nowhere).
        data_dir: TFDS data dir (`None`: TFDS's default).
        manual_dir: Manual files of config `c3d`, used when the dataset is not built yet.
        split: The split every row is evaluated on.
        seeds: Seeds of every trained row; with more than one, rows hold mean and std.
        first_seed: The first seed; the others follow it.
        chance_seed: Seed of the chance baseline.
        video_level_steps: Training steps of the video-level baseline.
        video_level_batch_size: Triplets per step of the video-level baseline.
        video_level_units: LSTM size of the video-level baseline.
        video_level_margin: Triplet-loss margin of the video-level baseline.
        model_steps: Training steps of every model row (`None`: the training preset's).
        model_preset: Training preset of the model rows (`video_reloc.training.PRESETS`;
            `None`: `synthetic` for a synthetic dataset, else `paper`).
        model_root: Where the model rows train (`None`: `output_dir/models`).
        model_overrides: `TrainConfig` fields every model row trains with besides its
            preset's (e.g. `{"normalization": "standardize"}`); named in the tables' caption.
        parallel_preset: Training preset of the `Ours, parallel` row; `model_steps` and
            `model_overrides` do not apply to it.
        parallel_overrides: `TrainConfig` fields the `Ours, parallel` row trains with besides
            its preset's (e.g. `{"train_steps": 300}`); named in the tables' caption.
        rows: Rows to run, by name (`None`: all of both tables but `Ours, parallel`). Rows
            left out are absent from the outputs; `Ours` is shared by both tables.
    """

    dataset: str = DEFAULT_DATASET
    output_dir: str | None = None
    data_dir: str | None = None
    manual_dir: str | None = None
    split: str = "test"
    seeds: int = 1
    first_seed: int = 0
    chance_seed: int = 0
    video_level_steps: int = 400
    video_level_batch_size: int = 64
    video_level_units: int = 128
    video_level_margin: float = 0.2
    model_steps: int | None = None
    model_preset: str | None = None
    model_root: str | None = None
    model_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    parallel_preset: str = "parallel"
    parallel_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    rows: Sequence[str] | None = None

    def __post_init__(self):
        if self.seeds < 1:
            raise UserError(f"must be at least 1, got {self.seeds}", field="seeds")
        known = set(TABLE1_ROWS) | set(TABLE2_ROWS)
        unknown = sorted(set(self.rows or ()) - known)
        if unknown:
            raise UserError(f"unknown rows {unknown}; choose among {sorted(known)}", field="rows")
        fields = {f.name for f in dataclasses.fields(training.TrainConfig)}
        for name in ("model_overrides", "parallel_overrides"):
            unknown = sorted(set(getattr(self, name)) - fields)
            if unknown:
                raise UserError(
                    f"unknown TrainConfig fields {unknown}; choose among {sorted(fields)}",
                    field=name,
                )


@dataclasses.dataclass
class BenchmarkTables:
    """The outputs of `run_benchmark`.

    Attributes:
        table1: Row name -> per-threshold result, in Table 1's order.
        table2: Row name -> per-threshold result, in Table 2's order.
        markdown: Both tables in the paper's layout, the paper's figures beside ours.
        seconds: Row name -> wall-clock seconds spent training and evaluating it (all seeds).
    """

    table1: dict[str, dict[str, Any]]
    table2: dict[str, dict[str, Any]]
    markdown: str
    seconds: dict[str, float]


def evaluate_predictor(predictor: SegmentPredictor, examples: Examples) -> dict[str, float]:
    """Top-1 accuracy of a predictor's segments at every tIoU threshold.

    Args:
        predictor: Any `SegmentPredictor`.
        examples: Fixed (query, reference) pairs with their ground truth.

    Returns:
        `{"0.1": ..., "0.9": ..., "mean": ...}` in percent.
    """
    segments = predictor.predict(examples.query, examples.reference)
    return accuracy_at_thresholds(temporal_iou(segments, examples.groundtruth))


def summarize(results: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """One row from the results of several seeds: the mean of each figure, and their std.

    Args:
        results: One per-threshold result per seed.

    Returns:
        The result itself for one seed; else the mean of every key plus `"std"`, a mapping of
        the same keys to the sample standard deviation (ddof = 1).
    """
    if len(results) == 1:
        return dict(results[0])
    keys = list(results[0])
    values = np.array([[r[k] for k in keys] for r in results], np.float64)
    row: dict[str, Any] = dict(zip(keys, values.mean(0).tolist()))
    row["std"] = dict(zip(keys, values.std(0, ddof=1).tolist()))
    return row


def video_level_trainer(config: BenchmarkConfig) -> Callable[[int, Examples], SegmentPredictor]:
    """A function training the video-level baseline of `config` with a seed on examples."""

    def train(seed: int, train_examples: Examples) -> SegmentPredictor:
        baseline = VideoLevelBaseline(
            train_examples.feature_dim,
            units=config.video_level_units,
            margin=config.video_level_margin,
            batch_size=config.video_level_batch_size,
            seed=seed,
        )
        losses = baseline.fit(
            train_examples.query,
            train_examples.reference,
            train_examples.groundtruth,
            train_examples.label,
            config.video_level_steps,
        )
        if losses:
            head = float(np.mean(losses[:10]))
            tail = float(np.mean(losses[-10:]))
            logger.info(
                "Video-level baseline, seed %d: triplet loss %.4f -> %.4f", seed, head, tail
            )
        return baseline

    return train


def render_markdown(
    table1: Mapping[str, Mapping[str, Any]],
    table2: Mapping[str, Mapping[str, Any]],
    config: BenchmarkConfig,
    num_pairs: int,
) -> str:
    """Both tables in the paper's layout (tIoU 0.5 ... 0.9, average), paper figures beside.

    Args:
        table1: Row name -> result of Table 1.
        table2: Row name -> result of Table 2.
        config: The run's configuration (for the caption).
        num_pairs: Pairs of the evaluated split.

    Returns:
        Markdown text.
    """
    seeds = f"{config.seeds} seeds (mean; std below)" if config.seeds > 1 else "1 seed"
    caption = (
        f"`{config.dataset}`, split `{config.split}` ({num_pairs} pairs), trained rows: {seeds}."
    )
    if config.model_overrides:
        settings = ", ".join(f"`{k}={v}`" for k, v in config.model_overrides.items())
        caption += f" Model rows trained with {settings}."
    if PARALLEL in table1:
        settings = "".join(f", `{k}={v}`" for k, v in config.parallel_overrides.items())
        caption += f" {PARALLEL}: preset `{config.parallel_preset}`{settings}."
    parts = []
    for number, table, paper, what in (
        (1, table1, PAPER_TABLE1, "Performance comparisons"),
        (2, table2, PAPER_TABLE2, "Ablation study"),
    ):
        if not table:
            continue
        parts.append(f"### Table {number}. {what}\n\n{caption}\n")
        parts.append(format_table(table, paper=paper, title="mAP @1"))
        quoted = [name for name in QUOTED_ROWS if name in paper]
        if quoted:
            parts.append(
                "\n" + ", ".join(f"{name} (paper)" for name in quoted) + ": quoted from the "
                'paper, not re-run here. All "(paper)" rows are the paper\'s figures on '
                "ActivityNet C3D features."
            )
        with_std = {name: row["std"] for name, row in table.items() if "std" in row}
        if with_std:
            parts.append("\nStandard deviation over the seeds:\n")
            parts.append(format_table(with_std, title="std"))
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def write_outputs(tables: BenchmarkTables, output_dir: str | pathlib.Path) -> None:
    """Writes `tables.md`, `table1.json` and `table2.json` into `output_dir`."""
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "tables.md").write_text(tables.markdown, encoding="utf-8")
    for name, table in (("table1.json", tables.table1), ("table2.json", tables.table2)):
        (output_dir / name).write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")


def run_benchmark(
    config: BenchmarkConfig,
    train_model: ModelTrainer | None = None,
    examples: Mapping[str, Examples] | None = None,
    train_parallel: ModelTrainer | None = None,
) -> BenchmarkTables:
    """Trains and evaluates every row of Tables 1 and 2 and writes them to `output_dir`.

    Args:
        config: What to run.
        train_model: `(ablation, seed, train, validation) -> predictor`; `None` uses
            `model_trainer()` (the training library's preset for the dataset).
        examples: `{"train": ..., "validation": ..., config.split: ...}` to use instead of
            loading the dataset (tests).
        train_parallel: The trainer of the `Ours, parallel` row (ablation `full`); `None`
            uses `model_trainer(config, parallel=True)`.

    Returns:
        The tables, also written to `config.output_dir` when it is set.
    """
    wanted = set(config.rows) if config.rows is not None else set(DEFAULT_ROWS + TABLE2_ROWS)
    splits = dict(examples or {})
    for split in dict.fromkeys(("train", "validation", config.split)):
        if split not in splits:
            splits[split] = load_split(split, config.dataset, config.data_dir, config.manual_dir)
    train, validation, test = splits["train"], splits["validation"], splits[config.split]
    seeds = [config.first_seed + k for k in range(config.seeds)]
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}

    def run_row(name: str, evaluate_seed: Callable[[int], dict[str, float]], seeded: bool):
        started = time.perf_counter()
        results[name] = summarize([evaluate_seed(seed) for seed in (seeds if seeded else [0])])
        seconds[name] = time.perf_counter() - started
        logger.info("%s: mean %.2f (%.0f s)", name, results[name]["mean"], seconds[name])

    if "Chance" in wanted:
        chance = ChanceBaseline(seed=config.chance_seed)
        run_row("Chance", lambda seed: evaluate_predictor(chance, test), seeded=False)
    if "Frame-level baseline" in wanted:
        frame = FrameLevelBaseline()
        run_row("Frame-level baseline", lambda seed: evaluate_predictor(frame, test), False)
    if FRAME_LEVEL_NORMALIZED in wanted:
        normalized = FrameLevelBaseline(normalization="standardize")
        run_row(FRAME_LEVEL_NORMALIZED, lambda seed: evaluate_predictor(normalized, test), False)
    if "Video-level baseline" in wanted:
        train_video = video_level_trainer(config)
        run_row(
            "Video-level baseline",
            lambda seed: evaluate_predictor(train_video(seed, train), test),
            seeded=True,
        )
    if train_model is None and wanted & set(TABLE2_ROWS):
        train_model = model_trainer(config)
    for name, ablation in TABLE2_ABLATIONS.items():
        if name in wanted:
            run_row(
                name,
                lambda seed, a=ablation: evaluate_predictor(
                    train_model(a, seed, train, validation), test
                ),
                seeded=True,
            )
    if PARALLEL in wanted:
        train_parallel = train_parallel or model_trainer(config, parallel=True)
        run_row(
            PARALLEL,
            lambda seed: evaluate_predictor(train_parallel("full", seed, train, validation), test),
            seeded=True,
        )
    table1 = {name: results[name] for name in TABLE1_ROWS if name in results}
    table2 = {name: results[name] for name in TABLE2_ROWS if name in results}
    timing = ", ".join(f"{name} {seconds[name]:.0f} s" for name in results)
    tables = BenchmarkTables(
        table1=table1,
        table2=table2,
        markdown=render_markdown(table1, table2, config, len(test))
        + f"\nWall-clock per row (training and evaluation, all seeds): {timing}.\n",
        seconds=seconds,
    )
    if config.output_dir:
        write_outputs(tables, config.output_dir)
    return tables


def model_trainer(config: BenchmarkConfig, parallel: bool = False) -> ModelTrainer:
    """The trainer of the model rows: `video_reloc.training.train` with one schedule for all.

    Every ablation and seed trains with the preset `config.model_preset` (`None`: `synthetic`
    for a synthetic dataset, else `paper`), `config.model_steps` steps when set, and
    `config.model_overrides`, into `MODEL_ROOT/<ablation>_seed<seed>` where `MODEL_ROOT` is
    `config.model_root`, else `output_dir/models` (a rerun resumes or reuses those runs), else
    a temporary folder. With `parallel`, the parallel model's row instead: the preset
    `config.parallel_preset` and `config.parallel_overrides`, into
    `MODEL_ROOT/parallel_<ablation>_seed<seed>`. The model of the best validation score is
    the one evaluated.
    """
    if parallel:
        preset, prefix = config.parallel_preset, "parallel_"
        overrides = {"architecture": "parallel", **config.parallel_overrides}
    else:
        preset = config.model_preset or ("synthetic" if "synthetic" in config.dataset else "paper")
        prefix, overrides = "", {"train_steps": config.model_steps, **config.model_overrides}
    if config.model_root:
        root = pathlib.Path(config.model_root)
    elif config.output_dir:
        root = pathlib.Path(config.output_dir) / "models"
    else:
        root = pathlib.Path(tempfile.mkdtemp(prefix="video_reloc_benchmark_"))

    def train(ablation: str, seed: int, train: Examples, validation: Examples) -> SegmentPredictor:
        train_config = training.preset_config(
            preset,
            model_dir=str(root / f"{prefix}{ablation}_seed{seed}"),
            dataset=config.dataset,
            data_dir=config.data_dir,
            manual_dir=config.manual_dir,
            ablation=ablation,
            seed=seed,
            test=False,
            export=False,
            progress=False,
            **overrides,
        )
        result = training.train(train_config, {"train": train, "validation": validation})
        logger.info(
            "Trained %s, seed %d: step %d, best validation step %d.",
            ablation,
            seed,
            result.step,
            result.best_step,
        )
        return evaluation.ModelPredictor(result.model, batch_size=train_config.eval_batch_size)

    return train
