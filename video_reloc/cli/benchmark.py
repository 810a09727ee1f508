"""Reproduces Table 1 and Table 2 of the paper on a dataset config.

    video-reloc-benchmark --dataset=activitynet_reloc/synthetic --output_dir=DIR [--seeds=N]
    video-reloc-benchmark --output_dir=DIR --rows='Ours,"Ours, parallel"'  # the parallel model too

Writes `DIR/tables.md` and `DIR/table1.json`, `DIR/table2.json` (row name -> per-threshold
accuracy) and prints the tables. See `video_reloc.benchmark`.
"""

from __future__ import annotations

from absl import flags

from video_reloc.benchmark import (
    DEFAULT_ROWS,
    PARALLEL,
    TABLE1_ROWS,
    TABLE2_ROWS,
    BenchmarkConfig,
    run_benchmark,
)
from video_reloc.cli import config_flags, runner
from video_reloc.training import TrainConfig

FLAGS = flags.FLAGS
# A flag per field of BenchmarkConfig (its help and default from the dataclass), but the three
# that hold lists or mappings, declared below.
_FIELDS = config_flags.define_flags(
    BenchmarkConfig,
    {"default": BenchmarkConfig()},
    exclude=("model_overrides", "parallel_overrides", "rows"),
)
flags.DEFINE_list(
    "model_params",
    [],
    "TrainConfig fields every model row trains with, KEY=VALUE,... (for example "
    "normalization=standardize,distractor_probability=0.5).",
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


def main(argv: list[str]) -> None:
    del argv  # the runner refuses positional arguments
    tables = run_benchmark(
        BenchmarkConfig(
            **config_flags.overrides(_FIELDS),
            model_overrides=config_flags.parse_overrides(
                TrainConfig, FLAGS.model_params, "model_params"
            ),
            parallel_overrides=config_flags.parse_overrides(
                TrainConfig, FLAGS.parallel_params, "parallel_params"
            ),
            rows=FLAGS.rows,
        )
    )
    print(tables.markdown)


def run() -> None:
    """Console-script entry point (`video-reloc-benchmark`)."""
    runner.run(main, __name__)


if __name__ == "__main__":
    run()
