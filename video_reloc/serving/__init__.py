"""A model server for exported SavedModels that speaks TensorFlow Serving's gRPC and REST APIs.

A client written for TensorFlow Serving works unchanged, over gRPC (`tensorflow-serving-api`'s
`PredictionServiceStub` and `ModelServiceStub`) or REST:

- gRPC `PredictionService.Predict`, `PredictionService.GetModelMetadata` and
  `ModelService.GetModelStatus` (see `grpc_api`).
- `GET /v1/models/NAME[/versions/N | /labels/LABEL]`: version status (`model_version_status`).
- `GET /v1/models/NAME[/versions/N | /labels/LABEL]/metadata`: `model_spec` and the signature
  defs.
- `POST /v1/models/NAME[/versions/N | /labels/LABEL]:predict`: the row format
  (`{"instances": [...]}` answered with `{"predictions": [...]}`) and the columnar format
  (`{"inputs": {...}}` answered with `{"outputs": {...}}`).
- Prometheus metrics at the path `--monitoring_config_file` names (see `metrics`).

Models are loaded with `tf.saved_model.load` only: the server needs neither the training code
nor the dataset builder. Every bad request is refused with INVALID_ARGUMENT (HTTP 400) and a
message that names the offending field; an unknown model, version or label gets NOT_FOUND
(404). Requests are queued per model version and, with batching on, concurrent requests (from
both APIs) are padded to common lengths and run as one batch (the model never lets padding
change a valid step).

Each version is warmed up when it loads, before the server reports it AVAILABLE (TensorFlow
Serving's `--enable_model_warmup`, on by default): the requests of the SavedModel's
`assets.extra/tf_serving_warmup_requests` run once each, so that XLA compiles the bucketed
shapes they cover (`video_reloc.export` writes one request per bucket a single pair up to 64
query and 300 reference steps meets) instead of the first client of each shape paying seconds.
A SavedModel without the file gets the same default buckets (with XLA) or one small request;
`model_warmup_shapes` replaces either.

While serving, the base paths are polled every `file_system_poll_wait_seconds` (TensorFlow
Serving's `--file_system_poll_wait_seconds`, 1 s by default; 0 or less: never), as TensorFlow
Serving does: a new version is loaded and warmed up (LOADING) before requests go to it
(AVAILABLE), and one the policy no longer asks for is unloaded once another is AVAILABLE, after
the requests using it finish (UNLOADING, then END); see `ModelManager`. A base path with no
version yet is served from its first version.

The configuration files are TensorFlow Serving's text protos, read with `text_format` into its
messages (`--model_config_file`, `--batching_parameters_file`, `--monitoring_config_file`).

The package's modules, each importing only those above it:

- `protos`: the TensorFlow Serving messages `tensorflow-serving-api` lacks.
- `config`: the configuration files (`ModelConfig`, `BatchingParameters`, `MonitoringConfig`).
- `errors`: `ServingError`, a refused request and its canonical error code.
- `batching`: the per-signature queue that merges and pads concurrent requests.
- `inputs`: the checks of a request's input arrays, shared by both APIs.
- `versions`: one loaded version (`ServedVersion`) and its warm-up.
- `manager`: the versions of each model, their labels and states, polled (`ModelManager`).
- `metrics`: the Prometheus metrics (`Metrics`).
- `rest_api`: request validation and the WSGI application (`RestApi`).
- `grpc_api`: the gRPC services (`PredictionServicer`, `ModelServicer`).
- `server`: waitress and gRPC servers and the polling thread (`ModelServer`, `start_server`,
  `serve`).
"""

from video_reloc.serving.batching import LENGTH_SUFFIX, OUTPUT_STEP_AXES
from video_reloc.serving.config import (
    DEFAULT_PROMETHEUS_PATH,
    BatchingParameters,
    ConfigError,
    ModelConfig,
    MonitoringConfig,
    parse_batching_parameters,
    parse_model_config,
    parse_monitoring_config,
    read_config_file,
)
from video_reloc.serving.errors import ServingError
from video_reloc.serving.grpc_api import ModelServicer, PredictionServicer
from video_reloc.serving.manager import (
    AVAILABLE,
    END,
    LOAD_RETRY_INTERVAL_S,
    LOADING,
    UNLOADING,
    ModelManager,
    load_models,
)
from video_reloc.serving.metrics import Metrics
from video_reloc.serving.rest_api import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_TIMEOUT_MS,
    PREDICT_METHOD,
    RestApi,
    parse_predict_request,
)
from video_reloc.serving.server import (
    DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS,
    DEFAULT_NUM_THREADS,
    DEFAULT_PORT,
    DEFAULT_REST_API_PORT,
    ModelServer,
    model_configs_from_flags,
    serve,
    start_server,
)
from video_reloc.serving.versions import (
    DEFAULT_SIGNATURE,
    LoadCancelledError,
    ServedVersion,
    find_versions,
)

__all__ = [
    "AVAILABLE",
    "BatchingParameters",
    "ConfigError",
    "DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS",
    "DEFAULT_NUM_THREADS",
    "DEFAULT_PORT",
    "DEFAULT_PROMETHEUS_PATH",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_REST_API_PORT",
    "DEFAULT_SIGNATURE",
    "DEFAULT_TIMEOUT_MS",
    "END",
    "LENGTH_SUFFIX",
    "LOADING",
    "LOAD_RETRY_INTERVAL_S",
    "LoadCancelledError",
    "ModelConfig",
    "ModelManager",
    "ModelServer",
    "ModelServicer",
    "Metrics",
    "MonitoringConfig",
    "OUTPUT_STEP_AXES",
    "PREDICT_METHOD",
    "PredictionServicer",
    "RestApi",
    "ServedVersion",
    "ServingError",
    "UNLOADING",
    "find_versions",
    "load_models",
    "model_configs_from_flags",
    "parse_batching_parameters",
    "parse_model_config",
    "parse_monitoring_config",
    "parse_predict_request",
    "read_config_file",
    "serve",
    "start_server",
]
