r"""Finds a query in a reference of any length with an exported model; prints JSON segments.

    video-reloc-relocalize --model=/models/reloc --query=query.npy --reference=video.npy
    video-reloc-relocalize --model=/models/reloc \
        --query=sub_activitynet_v1-3.c3d.hdf5:VIDEO_A --query_range=10:40 \
        --reference=sub_activitynet_v1-3.c3d.hdf5:VIDEO_B --top_k=5
"""

import json

from absl import flags

from video_reloc import relocalize
from video_reloc.cli import runner

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "SavedModel base or version folder.", required=True)
flags.DEFINE_string("query", None, "Query features: FILE.npy or FILE.hdf5:VIDEO.", required=True)
flags.DEFINE_string(
    "reference", None, "Reference features: FILE.npy or FILE.hdf5:VIDEO.", required=True
)
flags.DEFINE_string("query_range", None, "START:END features of the query video to use.")
flags.DEFINE_integer("top_k", 5, "Segments to return.")
flags.DEFINE_integer("window", relocalize.WINDOW, "Window length in features.")
flags.DEFINE_integer("stride", relocalize.WINDOW // 2, "Features between window starts.")
flags.DEFINE_float("nms_threshold", 0.5, "tIoU above which a worse segment is dropped.")
flags.DEFINE_float("fps", relocalize.DEFAULT_FPS, "Frame rate of the videos, for seconds.")
flags.DEFINE_integer("frames_per_feature", relocalize.FRAMES_PER_FEATURE, "Frames per feature.")
flags.DEFINE_integer("subsample", None, "Keep every n-th row (default: 2 for HDF5, 1 for .npy).")
flags.DEFINE_string("feature_name", "c3d_features", "HDF5 dataset name in a video's group.")
flags.DEFINE_integer("batch_size", 64, "Windows per model call.")


def main(argv):
    del argv  # the runner refuses positional arguments
    segments = relocalize.relocalize_files(
        FLAGS.model,
        FLAGS.query,
        FLAGS.reference,
        top_k=FLAGS.top_k,
        window=FLAGS.window,
        stride=FLAGS.stride,
        nms_threshold=FLAGS.nms_threshold,
        fps=FLAGS.fps,
        frames_per_feature=FLAGS.frames_per_feature,
        subsample=FLAGS.subsample,
        feature_name=FLAGS.feature_name,
        query_range=FLAGS.query_range,
        batch_size=FLAGS.batch_size,
    )
    print(json.dumps([segment.to_dict() for segment in segments], indent=2))


def run() -> None:
    """The console script `video-reloc-relocalize`."""
    runner.run(main, __name__)


if __name__ == "__main__":
    run()
