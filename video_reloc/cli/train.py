"""Trains the video re-localization model, evaluates it on test and exports it.

    video-reloc-train --model_dir=DIR                  # the main job: synthetic data, minutes
    video-reloc-train --model_dir=DIR --preset=paper --manual_dir=RAW   # ActivityNet, C3D
    video-reloc-train --model_dir=DIR --ablation=base --units=32 --train_steps=200

Builds the TFDS dataset if needed, trains with checkpoints in DIR (running the same command
again resumes), validates every --eval_every steps keeping the best model, then writes
DIR/results/test.json, prints the paper's table and exports DIR/export/<version>/. Every field
of `video_reloc.training.TrainConfig` is a flag; flags left unset take the preset's value
(`video_reloc.training.PRESETS`). See `video_reloc.training`.
"""

from __future__ import annotations

from absl import app, flags

from video_reloc import training
from video_reloc.cli import config_flags, runner

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "preset",
    "synthetic",
    sorted(training.PRESETS),
    "synthetic: the embedded synthetic dataset, a small fast schedule (the main job); paper: "
    "the c3d dataset (ActivityNet, needs --manual_dir once) and the original release's schedule.",
)
CONFIG_FLAGS = config_flags.define_flags(
    training.TrainConfig,
    {name: training.preset_config(name, model_dir="") for name in training.PRESETS},
)
# The original release's flags: the dropout rates as keep probabilities.
KEEP_PROB_FLAGS = {"encoder_keep_prob": "encoder_dropout", "matching_keep_prob": "matching_dropout"}
for _keep, _rate in KEEP_PROB_FLAGS.items():
    flags.DEFINE_float(_keep, None, f"1 - --{_rate}, as the original release names it.")


def main(argv: list[str]) -> None:
    del argv  # the runner refuses positional arguments
    overrides = config_flags.overrides(CONFIG_FLAGS)
    for keep, rate in KEEP_PROB_FLAGS.items():
        if FLAGS[keep].value is not None:
            if rate in overrides:
                raise app.UsageError(f"--{keep}: give it or --{rate}, not both")
            overrides[rate] = round(1.0 - FLAGS[keep].value, 10)
    training.train(training.preset_config(FLAGS.preset, **overrides))


def run() -> None:
    """The console script `video-reloc-train`."""
    runner.run(main, __name__)


if __name__ == "__main__":
    run()
