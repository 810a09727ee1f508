"""Finds a query in a reference of any length with an exported model; prints JSON segments.

    video-reloc-relocalize --model=/models/reloc --query=query.npy --reference=video.npy
    video-reloc-relocalize --model=/models/reloc \
        --query=sub_activitynet_v1-3.c3d.hdf5:VIDEO_A --query_range=10:40 \
        --reference=sub_activitynet_v1-3.c3d.hdf5:VIDEO_B --top_k=5
    video-reloc-relocalize --model=/models/reloc --query=clip.mp4 --reference=episode.mkv \
        --plot=episode.png

Video files are made into features as the model's training features were made (the backbone,
frame rate and clip length its export records); the segments' seconds are the reference's.
"""

import video_reloc_bin.startup  # noqa: F401 - first: TensorFlow reads its settings at start

# isort: split
import json

from absl import app, flags

from video_reloc import relocalize

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "SavedModel base or version folder.", required=True)
flags.DEFINE_string(
    "query", None, "The query: FILE.npy, FILE.hdf5:VIDEO or a video file.", required=True
)
flags.DEFINE_string(
    "reference", None, "The reference: FILE.npy, FILE.hdf5:VIDEO or a video file.", required=True
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
flags.DEFINE_string(
    "backbone",
    None,
    "For video files: where the model's backbone (.keras) is now, if moved. Default: where the "
    "model says.",
)
flags.DEFINE_boolean("progress", True, "Show a progress bar of the frames of video files.")
flags.DEFINE_string(
    "plot",
    None,
    "A PNG file: the reference timeline in seconds with the top-k segments and the per-step "
    "start/inside/end probabilities.",
)


def main(argv):
    del argv
    try:
        result = relocalize.relocalize_files(
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
            backbone=FLAGS.backbone,
            plot=FLAGS.plot,
            progress=FLAGS.progress,
        )
    except (OSError, KeyError, ValueError) as e:  # a file, video or flag, named in one line
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise SystemExit(f"video-reloc-relocalize: {message}") from None
    print(json.dumps([segment.to_dict() for segment in result.segments], indent=2))


def run():
    app.run(main)


if __name__ == "__main__":
    run()
