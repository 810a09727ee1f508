"""Exports a training checkpoint as a SavedModel for serving.

    video-reloc-export --checkpoint=DIR/best               # the best model of a run
    video-reloc-export --checkpoint=DIR/ckpt-500 --export_dir=/models/reloc --version=3

Signature `serving_default`: query (B, Tq, D), query_length (B,), reference (B, Tr, D),
reference_length (B,) in; start, end (exclusive), score and per-step probabilities (and the
attention map) out. See `video_reloc.export.export_checkpoint`.
"""

from __future__ import annotations

from absl import flags

from video_reloc import export
from video_reloc.cli import runner

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "checkpoint",
    None,
    "A checkpoint prefix (DIR/ckpt-500) or a folder of checkpoints (DIR: its latest good one; "
    "DIR/best: the best model).",
)
flags.DEFINE_string("export_dir", None, "SavedModel base folder. Default: MODEL_DIR/export.")
flags.DEFINE_integer("version", None, "Version folder number. Default: the next free one.")
flags.mark_flag_as_required("checkpoint")


def main(argv: list[str]) -> None:
    del argv  # the runner refuses positional arguments
    export.export_checkpoint(
        export.ExportConfig(
            checkpoint=FLAGS.checkpoint, export_dir=FLAGS.export_dir, version=FLAGS.version
        )
    )


def run() -> None:
    """The console script `video-reloc-export`."""
    runner.run(main, __name__)


if __name__ == "__main__":
    run()
