"""Serves exported SavedModels over TensorFlow Serving's REST API.

    video-reloc-serve --model_name=reloc --model_base_path=/models/reloc --rest_api_port=8501
    video-reloc-serve --model_config_file=models.config

The flags are TensorFlow Serving's; see `video_reloc.serving`.
"""

from absl import app, flags, logging

from video_reloc import serving

FLAGS = flags.FLAGS
flags.DEFINE_integer("rest_api_port", serving.DEFAULT_REST_API_PORT, "HTTP port of the REST API.")
flags.DEFINE_string("rest_api_host", "0.0.0.0", "Address the REST API listens on.")
flags.DEFINE_string("model_name", "default", "Name of the model in URLs (with model_base_path).")
flags.DEFINE_string("model_base_path", None, "Folder of numeric versions; the highest is served.")
flags.DEFINE_string("model_config_file", None, "TensorFlow Serving text-format model config.")
flags.DEFINE_bool("enable_batching", True, "Run concurrent requests as one batch.")
flags.DEFINE_string("batching_parameters_file", None, "Text-format batching parameters.")
flags.DEFINE_integer(
    "max_request_bytes", serving.DEFAULT_MAX_REQUEST_BYTES, "Larger bodies get HTTP 400."
)
flags.DEFINE_integer(
    "rest_api_timeout_in_ms", serving.DEFAULT_TIMEOUT_MS, "Longer waits get HTTP 503."
)

flags.mark_flags_as_mutual_exclusive(["model_base_path", "model_config_file"], required=True)


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
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
    )


def run():
    app.run(main)


if __name__ == "__main__":
    run()
