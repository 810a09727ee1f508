"""Trains the video re-localization model, evaluates it on test and exports it.

    video-reloc-train --model_dir=DIR                  # the main job: synthetic data, minutes
    video-reloc-train --model_dir=DIR --preset=paper --manual_dir=RAW   # ActivityNet, C3D

Builds the TFDS dataset if needed, trains with checkpoints in DIR (running the same command
again resumes), validates every --eval_every steps keeping the best model, then writes
DIR/results/test.json, prints the paper's table and exports DIR/export/<version>/. Flags left
unset take the preset's value (`video_reloc.training.PRESETS`). See `video_reloc.training`.
"""

from __future__ import annotations

import video_reloc_bin.startup  # noqa: F401 - first: TensorFlow reads its settings at start

# isort: split
from absl import app, flags

from video_reloc import architectures, data, training

FLAGS = flags.FLAGS
# The default preset first.
PRESET_CONFIGS = {
    name: training.preset_config(name, model_dir="")
    for name in sorted(training.PRESETS, key=lambda name: name != "synthetic")
}


def _default(name: str) -> str:
    values = {preset: getattr(config, name) for preset, config in PRESET_CONFIGS.items()}
    if len({repr(value) for value in values.values()}) == 1:
        return f" Default: {values['synthetic']}."
    return " Default: " + ", ".join(f"{v} (preset {p})" for p, v in values.items()) + "."


flags.DEFINE_string("model_dir", None, "Checkpoints, summaries, results and the export go here.")
flags.DEFINE_enum(
    "preset",
    "synthetic",
    sorted(training.PRESETS),
    "synthetic: the embedded synthetic dataset, a small fast schedule (the main job); paper: "
    "the c3d dataset (ActivityNet, needs --manual_dir once) and the original release's schedule; "
    "parallel: the parallel model (--architecture=parallel) and its schedule (500 steps of 64 "
    "pairs, units 64), on the synthetic dataset unless --dataset says otherwise.",
)
flags.DEFINE_string(
    "dataset",
    None,
    "TFDS dataset, activitynet_reloc/CONFIG (c3d, synthetic, simulated_c3d, or custom: your "
    "own data in --manual_dir)." + _default("dataset"),
)
flags.DEFINE_string("data_dir", None, "TFDS data dir. Default: TFDS's (~/tensorflow_datasets).")
flags.DEFINE_string(
    "manual_dir",
    None,
    "Folder of the raw files of config c3d or custom (annotations, length.json, features), "
    "handed to the builder when the dataset is not built yet.",
)
flags.DEFINE_integer("train_steps", None, "Training steps in all." + _default("train_steps"))
flags.DEFINE_integer(
    "batch_size", None, "Pairs per global batch, split over replicas." + _default("batch_size")
)
flags.DEFINE_float("learning_rate", None, "Adam's learning rate." + _default("learning_rate"))
flags.DEFINE_float("clip_norm", None, "Global gradient norm clip." + _default("clip_norm"))
flags.DEFINE_enum(
    "architecture",
    None,
    sorted(architectures.ARCHITECTURES),
    "cgbm: the paper's cross gated bilinear matching model (recurrent); parallel: every "
    "reference step matched at once by similarity attention, a similarity-map CNN and dilated "
    "temporal convolutions (no loop over time)." + _default("architecture"),
)
flags.DEFINE_enum(
    "ablation",
    None,
    sorted({name for _, switches in architectures.ARCHITECTURES.values() for name in switches}),
    "Model variant (Table 2): cgbm: base, base_cross_gating, base_bilinear or full; parallel: "
    + ", ".join(sorted(architectures.ablations("parallel")))
    + "."
    + _default("ablation"),
)
flags.DEFINE_integer(
    "units",
    None,
    "Hidden size l of every LSTM (cgbm); width of the encoder and the matching (parallel)."
    + _default("units"),
)
flags.DEFINE_integer(
    "bilinear_rank", None, "Rank k of the bilinear matching." + _default("bilinear_rank")
)
flags.DEFINE_float(
    "encoder_keep_prob", None, "Keep probability of dropout after the encoder. Default: 0.6."
)
flags.DEFINE_float(
    "matching_keep_prob", None, "Keep probability of dropout after the matching. Default: 0.8."
)
flags.DEFINE_float(
    "crop_probability",
    None,
    "Probability of cropping a training reference's context." + _default("crop_probability"),
)
flags.DEFINE_enum(
    "normalization",
    None,
    ["standardize", "center"],
    "Normalize each query and reference over its own valid steps inside the model (not in "
    "the paper): standardize (every dimension) or center (one scale). Default: none. "
    "Architecture cgbm only: the parallel model normalizes its inputs itself.",
)
flags.DEFINE_float(
    "distractor_probability",
    None,
    "Probability that a training reference also holds windows of other classes (not in the "
    "original release)." + _default("distractor_probability"),
)
flags.DEFINE_integer(
    "bucket_span", None, "Reference lengths per training bucket." + _default("bucket_span")
)
flags.DEFINE_integer("seed", None, "Seed of weights, pairs and dropout." + _default("seed"))
flags.DEFINE_enum(
    "strategy",
    None,
    list(training.STRATEGIES),
    "auto: multi_worker when TF_CONFIG names several tasks, mirrored with several GPUs, else "
    "one_device; mirrored: MirroredStrategy over all GPUs (or logical CPUs); multi_worker: "
    "MultiWorkerMirroredStrategy from TF_CONFIG." + _default("strategy"),
)
flags.DEFINE_integer(
    "checkpoint_every", None, "Steps between checkpoints." + _default("checkpoint_every")
)
flags.DEFINE_integer(
    "keep_checkpoints", None, "Checkpoints kept in --model_dir." + _default("keep_checkpoints")
)
flags.DEFINE_integer("eval_every", None, "Steps between validations." + _default("eval_every"))
flags.DEFINE_integer(
    "eval_batch_size", None, "Pairs per evaluation batch." + _default("eval_batch_size")
)
flags.DEFINE_integer(
    "summary_every", None, "Steps between training summaries." + _default("summary_every")
)
flags.DEFINE_integer(
    "num_images", None, "Validation pairs in the TensorBoard images." + _default("num_images")
)
flags.DEFINE_boolean("test", None, "Evaluate the best model on test at the end. Default: true.")
flags.DEFINE_boolean("export", None, "Export the best model at the end. Default: true.")
flags.DEFINE_boolean("progress", None, "Show a progress bar. Default: true.")
flags.mark_flag_as_required("model_dir")

OVERRIDES = (
    "dataset",
    "data_dir",
    "manual_dir",
    "train_steps",
    "batch_size",
    "learning_rate",
    "clip_norm",
    "architecture",
    "ablation",
    "units",
    "bilinear_rank",
    "crop_probability",
    "distractor_probability",
    "normalization",
    "bucket_span",
    "seed",
    "strategy",
    "checkpoint_every",
    "keep_checkpoints",
    "eval_every",
    "eval_batch_size",
    "summary_every",
    "num_images",
    "test",
    "export",
    "progress",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    overrides = {name: getattr(FLAGS, name) for name in OVERRIDES}
    if FLAGS.encoder_keep_prob is not None:
        overrides["encoder_dropout"] = round(1.0 - FLAGS.encoder_keep_prob, 10)
    if FLAGS.matching_keep_prob is not None:
        overrides["matching_dropout"] = round(1.0 - FLAGS.matching_keep_prob, 10)
    try:
        config = training.preset_config(FLAGS.preset, model_dir=FLAGS.model_dir, **overrides)
    except ValueError as e:  # a flag out of its range (an ablation of another architecture)
        raise app.UsageError(str(e)) from None
    try:
        training.train(config)
    except data.DatasetError as e:  # a bad or missing manual file, named in one line
        raise SystemExit(f"video-reloc-train: {e}") from None


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
