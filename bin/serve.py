"""Serves exported SavedModels over TensorFlow Serving's REST API.

    video-reloc-serve --model_name=reloc --model_base_path=/models/reloc --rest_api_port=8501
    video-reloc-serve --model_config_file=models.config

The flags are TensorFlow Serving's (and --model_warmup_shapes); see `video_reloc.serving`.
"""

import video_reloc_bin.startup  # noqa: F401 - first: TensorFlow reads its settings at start

# isort: split
from absl import app, flags, logging

from video_reloc import serving
from video_reloc.warmup import WarmupShape

FLAGS = flags.FLAGS
flags.DEFINE_integer("rest_api_port", serving.DEFAULT_REST_API_PORT, "HTTP port of the REST API.")
flags.DEFINE_string("rest_api_host", "0.0.0.0", "Address the REST API listens on.")
flags.DEFINE_string("model_name", "default", "Name of the model in URLs (with model_base_path).")
flags.DEFINE_string(
    "model_base_path", None, "Folder of numeric versions; the highest is served (polled)."
)
flags.DEFINE_string("model_config_file", None, "TensorFlow Serving text-format model config.")
flags.DEFINE_bool("enable_batching", True, "Run concurrent requests as one batch.")
flags.DEFINE_string("batching_parameters_file", None, "Text-format batching parameters.")
flags.DEFINE_integer(
    "max_request_bytes", serving.DEFAULT_MAX_REQUEST_BYTES, "Larger bodies get HTTP 400."
)
flags.DEFINE_integer(
    "rest_api_timeout_in_ms", serving.DEFAULT_TIMEOUT_MS, "Longer waits get HTTP 503."
)

flags.DEFINE_bool(
    "enable_model_warmup",
    True,
    "Warm each model version up before serving it (as TensorFlow Serving): run the requests of "
    "its assets.extra/tf_serving_warmup_requests, or without that file the default bucketed "
    "shapes, so that XLA compiles them at load instead of on the first requests.",
)
flags.DEFINE_list(
    "model_warmup_shapes",
    None,
    "Warm-up shapes for every model instead of its own requests: QUERYxREFERENCE (batch 1) or "
    "BATCHxQUERYxREFERENCE, e.g. 32x300,4x32x300. Steps are padded to their bucket (query to "
    "a multiple of 16, reference of 50, batch to a power of two), one compile per bucket.",
)

flags.DEFINE_float(
    "file_system_poll_wait_seconds",
    serving.DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS,
    "Interval in seconds between polls of the base paths for new or removed model versions (as "
    "TensorFlow Serving): a new version is loaded and warmed up before requests move to it, and "
    "the versions the policy no longer asks for are unloaded once it is AVAILABLE. 0 or less: "
    "the versions loaded at start are served until the end.",
)

flags.mark_flags_as_mutual_exclusive(["model_base_path", "model_config_file"], required=True)


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.INFO)  # the load and warm-up progress
    try:
        shapes = (
            None
            if FLAGS.model_warmup_shapes is None
            else [WarmupShape.parse(text) for text in FLAGS.model_warmup_shapes]
        )
    except ValueError as error:
        raise app.UsageError(f"--model_warmup_shapes: {error}") from None
    serving.serve(
        rest_api_port=FLAGS.rest_api_port,
        model_name=FLAGS.model_name,
        model_base_path=FLAGS.model_base_path,
        model_config_file=FLAGS.model_config_file,
        enable_batching=FLAGS.enable_batching,
        batching_parameters_file=FLAGS.batching_parameters_file,
        max_request_bytes=FLAGS.max_request_bytes,
        rest_api_timeout_in_ms=FLAGS.rest_api_timeout_in_ms,
        rest_api_host=FLAGS.rest_api_host,
        enable_model_warmup=FLAGS.enable_model_warmup,
        model_warmup_shapes=shapes,
        file_system_poll_wait_seconds=FLAGS.file_system_poll_wait_seconds,
    )


def run():
    app.run(main)


if __name__ == "__main__":
    run()
