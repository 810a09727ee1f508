"""Serves exported SavedModels over TensorFlow Serving's gRPC and REST APIs.

    video-reloc-serve --model_name=reloc --model_base_path=/models/reloc \
        --port=8500 --rest_api_port=8501
    video-reloc-serve --model_config_file=models.config \
        --monitoring_config_file=monitoring.config

The flags are TensorFlow Serving's, with its meanings (plus --model_warmup_shapes,
--max_request_bytes and the listening addresses); where a default differs, its help says why.
See `video_reloc.serving`.
"""

import video_reloc_bin.startup  # noqa: F401 - first: TensorFlow reads its settings at start

# isort: split
from absl import app, flags, logging

from video_reloc import serving
from video_reloc.warmup import WarmupShape

FLAGS = flags.FLAGS

# The flags, together: TensorFlow Serving's names and meanings.
flags.DEFINE_integer(
    "port",
    serving.DEFAULT_PORT,
    "Port of the gRPC API (tensorflow.serving.PredictionService and ModelService), as "
    "TensorFlow Serving's --port. 0: no gRPC API (TensorFlow Serving always serves gRPC).",
)
flags.DEFINE_integer(
    "rest_api_port",
    serving.DEFAULT_REST_API_PORT,
    "Port of the HTTP/REST API; 0: no REST API. Default 8501, where TensorFlow Serving's is 0 "
    "(REST off): REST is this server's documented API and carries the Prometheus metrics.",
)
flags.DEFINE_string("rest_api_host", "0.0.0.0", "Address the REST API listens on.")
flags.DEFINE_string("grpc_host", "0.0.0.0", "Address the gRPC API listens on.")
flags.DEFINE_string("model_name", "default", "Name of the model (with --model_base_path).")
flags.DEFINE_string(
    "model_base_path",
    None,
    "Folder of numeric versions; the highest is served (polled). It may hold no version yet: "
    "the model is reported as not available until the first one appears.",
)
flags.DEFINE_string(
    "model_config_file",
    None,
    "TensorFlow Serving's text-format ModelServerConfig (model_config_list { config { name, "
    "base_path, model_version_policy, version_labels } }), for several models.",
)
flags.DEFINE_bool(
    "enable_batching",
    True,
    "Run concurrent requests (of either API) as one padded batch. On by default, where "
    "TensorFlow Serving's is off: the model pads pairs of different lengths without changing "
    "any answer, and merged batches use the cores better under load.",
)
flags.DEFINE_string(
    "batching_parameters_file",
    None,
    "TensorFlow Serving's text-format BatchingParameters, e.g. max_batch_size { value: 32 } "
    "batch_timeout_micros { value: 2000 }.",
)
flags.DEFINE_string(
    "monitoring_config_file",
    None,
    "TensorFlow Serving's text-format MonitoringConfig: prometheus_config { enable: true, "
    'path: "/monitoring/prometheus/metrics" } serves Prometheus metrics at that path of the '
    "REST API.",
)
flags.DEFINE_integer(
    "max_request_bytes",
    serving.DEFAULT_MAX_REQUEST_BYTES,
    "Larger requests are refused: HTTP 413 on REST, RESOURCE_EXHAUSTED on gRPC.",
)
flags.DEFINE_integer(
    "rest_api_timeout_in_ms",
    serving.DEFAULT_TIMEOUT_MS,
    "A request waiting longer for the model is refused (HTTP 503; gRPC DEADLINE_EXCEEDED, or "
    "the client's deadline if shorter), and a REST connection silent this long is closed.",
)
flags.DEFINE_integer(
    "rest_api_num_threads",
    serving.DEFAULT_NUM_THREADS,
    "REST requests handled at once (default: four per CPU, as TensorFlow Serving); clients "
    "that stall mid-request hold no thread.",
)
flags.DEFINE_integer(
    "grpc_max_threads",
    serving.DEFAULT_NUM_THREADS,
    "gRPC requests handled at once (default: four per CPU, as TensorFlow Serving).",
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
    for name in ("port", "rest_api_port"):
        if not 0 <= FLAGS[name].value < 65536:
            raise app.UsageError(f"--{name}={FLAGS[name].value}: not a port (0 to 65535)")
    if not FLAGS.port and not FLAGS.rest_api_port:
        raise app.UsageError("--port=0 and --rest_api_port=0: serve at least one API")
    try:
        serving.serve(
            port=FLAGS.port or None,
            rest_api_port=FLAGS.rest_api_port or None,
            model_name=FLAGS.model_name,
            model_base_path=FLAGS.model_base_path,
            model_config_file=FLAGS.model_config_file,
            enable_batching=FLAGS.enable_batching,
            batching_parameters_file=FLAGS.batching_parameters_file,
            monitoring_config_file=FLAGS.monitoring_config_file,
            max_request_bytes=FLAGS.max_request_bytes,
            rest_api_timeout_in_ms=FLAGS.rest_api_timeout_in_ms,
            rest_api_host=FLAGS.rest_api_host,
            grpc_host=FLAGS.grpc_host,
            rest_api_num_threads=FLAGS.rest_api_num_threads,
            grpc_max_threads=FLAGS.grpc_max_threads,
            enable_model_warmup=FLAGS.enable_model_warmup,
            model_warmup_shapes=shapes,
            file_system_poll_wait_seconds=FLAGS.file_system_poll_wait_seconds,
        )
    except (serving.ConfigError, OSError, ValueError) as error:
        raise app.UsageError(str(error)) from None


def run():
    app.run(main)


if __name__ == "__main__":
    run()
