"""Evaluates a SavedModel or a checkpoint on a split: prints the paper's table, writes JSON.

    video-reloc-evaluate --model=DIR/export/1 --split=test --output=test.json
    video-reloc-evaluate --model=DIR            # a model dir: its export, else its best
    video-reloc-evaluate --model=DIR --plots=figures/   # and figures of a few test pairs

The JSON is `{"0.1": ..., ..., "0.9": ..., "mean": ...}` in percent, `mean` over tIoU
0.5 ... 0.9. See `video_reloc.evaluation`.
"""

from __future__ import annotations

import video_reloc_bin.startup  # noqa: F401 - first: TensorFlow reads its settings at start

# isort: split
from absl import app, flags

from video_reloc import data, evaluation

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model",
    None,
    "A SavedModel folder, an export base (its latest version), a checkpoint prefix "
    "(DIR/ckpt-500, DIR/best/ckpt-300) or a model dir (its export, else best/, else its latest "
    "checkpoint).",
)
flags.DEFINE_string("split", "test", "The split: test or validation.")
flags.DEFINE_string(
    "dataset",
    None,
    "TFDS dataset, activitynet_reloc/CONFIG. Default: the one the model was trained on, else "
    "activitynet_reloc/synthetic.",
)
flags.DEFINE_string(
    "data_dir", None, "TFDS data dir. Default: the model's training one, else TFDS's."
)
flags.DEFINE_string(
    "manual_dir", None, "Raw files of config c3d or custom, if the dataset is not built."
)
flags.DEFINE_integer("batch_size", 64, "Pairs per batch.")
flags.DEFINE_string(
    "output",
    None,
    "Where to write the table as JSON. Default: MODEL_DIR/results/evaluate_SPLIT.json when the "
    "model is in a model dir of video-reloc-train, else nowhere.",
)
flags.DEFINE_string("predictions_output", None, "Where to write per-pair predictions as JSON.")
flags.DEFINE_string(
    "plots",
    None,
    "A folder for PNG figures of the first --num_plots pairs: the reference timeline in seconds "
    "with the true and predicted segments and the per-step start/inside/end probabilities "
    "(Fig. 4), and the attention map (Fig. 5).",
)
flags.DEFINE_integer("num_plots", evaluation.PLOTS, "Pairs drawn into --plots.")
flags.mark_flag_as_required("model")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        evaluation.evaluate(
            evaluation.EvaluateConfig(
                model=FLAGS.model,
                split=FLAGS.split,
                dataset=FLAGS.dataset,
                data_dir=FLAGS.data_dir,
                manual_dir=FLAGS.manual_dir,
                batch_size=FLAGS.batch_size,
                output=FLAGS.output,
                predictions_output=FLAGS.predictions_output,
                plots=FLAGS.plots,
                num_plots=FLAGS.num_plots,
            )
        )
    except data.DatasetError as e:
        raise SystemExit(f"video-reloc-evaluate: {e}") from None


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
