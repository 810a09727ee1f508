"""Features from video files, for the dataset config `custom` and for relocalize.

    video-reloc-features --input=VIDEOS/ --output=MANUAL_DIR
    video-reloc-features --input=clip.mp4 --output=DIR --backbone=/models/frames.keras

Writes DIR/features.hdf5 (group v_<file stem>, one (n, D) float32 dataset, a row per clip of
16 frames sampled at --frame_rate), DIR/length.json and DIR/features.json (how they were
made). Videos already written are skipped; undecodable files are skipped and named. Add the
annotations (activity_net.v1-3.min.json) to DIR and build `activitynet_reloc/custom`. See
`video_reloc.features`.
"""

from __future__ import annotations

import video_reloc_bin.startup  # noqa: F401 - first: TensorFlow reads its settings at start

# isort: split
from absl import app, flags

from video_reloc import features

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "A video file or a folder of video files.")
flags.DEFINE_string("output", None, "Folder of features.hdf5, length.json and features.json.")
flags.DEFINE_string(
    "backbone",
    features.DEFAULT_BACKBONE,
    "A Keras application name (ImageNet weights, fetched once into Keras' cache) or a path to "
    "a .keras model mapping RGB frames (N, H, W, 3), values 0-255, to (N, D).",
)
flags.DEFINE_float("frame_rate", features.FRAME_RATE, "Frames sampled per second of video.")
flags.DEFINE_integer("clip_length", features.CLIP_LENGTH, "Sampled frames per feature row.")
flags.DEFINE_integer("batch_size", 32, "Frames per backbone call.")
flags.DEFINE_boolean("progress", True, "Show progress bars.")
flags.mark_flags_as_required(["input", "output"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        report = features.extract_features(
            FLAGS.input,
            FLAGS.output,
            backbone=FLAGS.backbone,
            frame_rate=FLAGS.frame_rate,
            clip_length=FLAGS.clip_length,
            batch_size=FLAGS.batch_size,
            progress=FLAGS.progress,
        )
    except features.FeaturesError as e:
        raise SystemExit(f"video-reloc-features: {e}") from None
    print(features.summary(report, FLAGS.output), flush=True)
    if not report.written and not report.skipped:
        raise SystemExit("video-reloc-features: no video could be decoded")


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
