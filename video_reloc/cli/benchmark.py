"""Reproduces Table 1 and Table 2 of the paper on a dataset config.

    video-reloc-benchmark --dataset=activitynet_reloc/synthetic --output_dir=DIR [--seeds=N]
    video-reloc-benchmark --output_dir=DIR --rows='Ours,"Ours, parallel"'  # the parallel model too

Writes `DIR/tables.md` and `DIR/table1.json`, `DIR/table2.json` (row name -> per-threshold
accuracy) and prints the tables. See `video_reloc.benchmark`.
"""

from __future__ import annotations

import dataclasses

from absl import app, flags

from video_reloc.benchmark import (
    DEFAULT_ROWS,
    PARALLEL,
    TABLE1_ROWS,
    TABLE2_ROWS,
    BenchmarkConfig,
    run_benchmark,
)
from video_reloc.cli import runner
from video_reloc.data import DEFAULT_DATASET
from video_reloc.training import TrainConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", DEFAULT_DATASET, "TFDS dataset, activitynet_reloc/CONFIG.")
flags.DEFINE_string("output_dir", None, "Where tables.md, table1.json and table2.json go.")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's).")
flags.DEFINE_string("manual_dir", None, "Manual files of config c3d (if not built yet).")
flags.DEFINE_string("split", "test", "The split every row is evaluated on.")
flags.DEFINE_integer("seeds", 1, "Seeds of every trained row; >1 reports mean and std.")
flags.DEFINE_integer("first_seed", 0, "The first seed.")
flags.DEFINE_integer("chance_seed", 0, "Seed of the chance baseline.")
flags.DEFINE_integer("video_level_steps", 400, "Training steps of the video-level baseline.")
flags.DEFINE_integer("model_steps", None, "Training steps of every model row (default: preset).")
flags.DEFINE_string(
    "model_preset", None, "Training preset of the model rows (default: synthetic or paper)."
)
flags.DEFINE_string("model_root", None, "Where the model rows train (default: OUTPUT_DIR/models).")
flags.DEFINE_list(
    "model_params",
    [],
    "TrainConfig fields every model row trains with, KEY=VALUE,... (for example "
    "normalization=standardize,distractor_probability=0.5).",
)
flags.DEFINE_string(
    "parallel_preset", "parallel", f"Training preset of the row '{PARALLEL}' (the parallel model)."
)
flags.DEFINE_list(
    "parallel_params",
    [],
    f"TrainConfig fields the row '{PARALLEL}' trains with besides its preset's, KEY=VALUE,... "
    "(--model_steps and --model_params do not apply to it).",
)
flags.DEFINE_list(
    "rows",
    None,
    "Rows to run, comma-separated (quote a name holding a comma: 'Ours,\"Ours, parallel\"'): "
    + "; ".join(dict.fromkeys(TABLE1_ROWS + TABLE2_ROWS))
    + " (default: all but "
    + "; ".join(sorted(set(TABLE1_ROWS) - set(DEFAULT_ROWS)))
    + ").",
)
flags.mark_flag_as_required("output_dir")


def _parse_params(items: list[str], flag: str = "model_params") -> dict:
    """`["normalization=standardize", "distractor_probability=0.5"]` as typed field values."""
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise app.UsageError(f"--{flag}: {item!r} is not KEY=VALUE of {sorted(types)}")
        kind = types[key]
        if "float" in kind:
            params[key] = float(value)
        elif "int" in kind:
            params[key] = int(value)
        elif "bool" in kind:
            params[key] = value.lower() in ("1", "true", "yes")
        else:
            params[key] = None if value.lower() == "none" else value
    return params


def main(argv: list[str]) -> None:
    del argv  # the runner refuses positional arguments
    tables = run_benchmark(
        BenchmarkConfig(
            dataset=FLAGS.dataset,
            output_dir=FLAGS.output_dir,
            data_dir=FLAGS.data_dir,
            manual_dir=FLAGS.manual_dir,
            split=FLAGS.split,
            seeds=FLAGS.seeds,
            first_seed=FLAGS.first_seed,
            chance_seed=FLAGS.chance_seed,
            video_level_steps=FLAGS.video_level_steps,
            model_steps=FLAGS.model_steps,
            model_preset=FLAGS.model_preset,
            model_root=FLAGS.model_root,
            model_overrides=_parse_params(FLAGS.model_params),
            parallel_preset=FLAGS.parallel_preset,
            parallel_overrides=_parse_params(FLAGS.parallel_params, "parallel_params"),
            rows=FLAGS.rows,
        )
    )
    print(tables.markdown)


def run() -> None:
    """Console-script entry point (`video-reloc-benchmark`)."""
    runner.run(main, __name__)


if __name__ == "__main__":
    run()
