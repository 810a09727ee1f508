"""TensorFlow Serving's configuration files, read with protobuf's text format into its protos.

- `--model_config_file`: a `tensorflow.serving.ModelServerConfig` (`tensorflow-serving-api`'s
  `model_server_config_pb2`), read by `parse_model_config` into `ModelConfig`s.
- `--batching_parameters_file`: a `tensorflow.serving.BatchingParameters`
  (`max_batch_size { value: 32 }`), read by `parse_batching_parameters`.
- `--monitoring_config_file`: a `tensorflow.serving.MonitoringConfig`
  (`prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }`), read by
  `parse_monitoring_config`.

`google.protobuf.text_format` parses each file; its errors become `ConfigError`s that give the
file, line and column (`models.config:3:11: ...`). The last two messages come from
`video_reloc.serving.protos` (the package ships neither).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Mapping

from google.protobuf import message, text_format
from tensorflow_serving.config import model_server_config_pb2

from video_reloc.serving.protos import batching_parameters_class, monitoring_config_class

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
"""TensorFlow Serving's path of the metrics when `prometheus_config` names none."""


class ConfigError(ValueError):
    """A configuration file that does not parse, or asks for something this server lacks."""


def _parse(text: str, proto: message.Message, source: str) -> message.Message:
    """`text_format.Parse`, its errors as `ConfigError("SOURCE:LINE:COLUMN: ...")`."""
    try:
        return text_format.Parse(text, proto)
    except text_format.ParseError as error:
        reason = re.sub(r"^\d+:\d+ : ", "", str(error))
        line, column = error.GetLine(), error.GetColumn()
        where = f"{source}:{line}:{column}" if line is not None and line > 0 else source
        raise ConfigError(f"{where}: {reason}") from None


def read_config_file(path: str | pathlib.Path, flag: str) -> str:
    """The text of a configuration file named by `--flag`, or a `ConfigError` naming both."""
    try:
        return pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ConfigError(f"--{flag}={path}: cannot read the file ({reason})") from None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One model to serve, as TensorFlow Serving's `ModelConfig` gives it.

    Attributes:
        name: The model's name in URLs and `ModelSpec.name`.
        base_path: The folder holding numeric version folders.
        versions: Versions to serve (`specific`); empty means the latest `num_latest`.
        num_latest: How many of the highest versions to serve when `versions` is empty;
            0 serves all.
        version_labels: Labels of versions (`version_labels { key: "stable" value: 1 }`), for
            REST's `/labels/LABEL` and gRPC's `ModelSpec.version_label`.
    """

    name: str
    base_path: str
    versions: tuple[int, ...] = ()
    num_latest: int = 1
    version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)


def parse_model_config(text: str, source: str = "model config") -> list[ModelConfig]:
    """Reads TensorFlow Serving's `--model_config_file` (a text `ModelServerConfig`).

    For example::

        model_config_list {
          config { name: 'reloc' base_path: '/models/reloc' model_platform: 'tensorflow' }
          config {
            name: 'reloc_ab' base_path: '/models/ab'
            model_version_policy { specific { versions: 1 versions: 2 } }
            version_labels { key: 'stable' value: 1 }
            version_labels { key: 'canary' value: 2 }
          }
        }

    `model_version_policy` may be `latest { num_versions: N }` (1 when unset, as in TensorFlow
    Serving), `all {}` or `specific { versions: ... }`. `logging_config` is accepted and
    ignored (this server logs no requests).

    Args:
        text: The file's text.
        source: The file's name, for error messages.

    Returns:
        The models, in file order.

    Raises:
        ConfigError: On a syntax error or an unknown field (with line and column), a missing
            name or base path, a platform other than `tensorflow`, a repeated name, a
            `custom_model_config`, an empty `specific` policy or a label without a version.
    """
    proto = _parse(text, model_server_config_pb2.ModelServerConfig(), source)
    if proto.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{source}: custom_model_config is not supported; use model_config_list")
    configs: list[ModelConfig] = []
    names: set[str] = set()
    for index, config in enumerate(proto.model_config_list.config):
        where = f"{source}: config #{index + 1}" + (f" ({config.name})" if config.name else "")
        if not config.name:
            raise ConfigError(f"{where}: needs a name")
        if not config.base_path:
            raise ConfigError(f"{where}: needs a base_path")
        if config.model_platform not in ("", "tensorflow"):
            raise ConfigError(
                f"{where}: model_platform {config.model_platform!r} is not 'tensorflow'"
            )
        if config.name in names:
            raise ConfigError(f"{where}: model name {config.name!r} is used twice")
        names.add(config.name)
        policy = config.model_version_policy
        versions, num_latest = (), 1
        kind = policy.WhichOneof("policy_choice")
        if kind == "latest":
            num_latest = policy.latest.num_versions or 1
        elif kind == "all":
            num_latest = 0
        elif kind == "specific":
            versions = tuple(int(v) for v in policy.specific.versions)
            if not versions:
                raise ConfigError(f"{where}: the specific policy lists no versions")
        labels = dict(config.version_labels)
        for label, version in labels.items():
            if not label:
                raise ConfigError(f"{where}: a version label needs a name")
            if versions and version not in versions:
                raise ConfigError(
                    f"{where}: label {label!r} points at version {version}, which the specific "
                    f"policy does not serve ({list(versions)})"
                )
        configs.append(ModelConfig(config.name, config.base_path, versions, num_latest, labels))
    if not configs:
        raise ConfigError(
            f"{source}: no model configured (model_config_list {{ config {{ ... }} }})"
        )
    return configs


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """Request batching, as TensorFlow Serving's `--batching_parameters_file` sets it.

    Attributes:
        max_batch_size: The most rows run together; a larger request runs alone.
        batch_timeout_micros: How long the first request of a batch waits for others; 0 takes
            only what is already queued (no added latency).
        max_enqueued_batches: With `max_batch_size`, bounds the queued rows; past it, requests
            are refused as UNAVAILABLE (HTTP 503).
        num_batch_threads: Batches run at the same time per model version.
    """

    max_batch_size: int = 64
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingParameters:
    """Reads TensorFlow Serving's `--batching_parameters_file` (a text `BatchingParameters`).

    For example `max_batch_size { value: 32 } batch_timeout_micros { value: 2000 }`. Fields
    this server has no use for (`pad_variable_length_inputs`, `allowed_batch_sizes`,
    `thread_pool_name`, ...) are accepted and ignored: it always pads variable lengths. Unset
    fields keep `BatchingParameters`' defaults.

    Raises:
        ConfigError: On a syntax error or an unknown field (with line and column), or a value
            out of range.
    """
    proto = _parse(text, batching_parameters_class()(), source)
    values = {}
    for field in dataclasses.fields(BatchingParameters):
        if proto.HasField(field.name):
            value = getattr(proto, field.name).value
            minimum = 1 if field.name in ("max_batch_size", "num_batch_threads") else 0
            if value < minimum:
                raise ConfigError(f"{source}: {field.name} must be at least {minimum}, not {value}")
            values[field.name] = int(value)
    return BatchingParameters(**values)


@dataclasses.dataclass(frozen=True)
class MonitoringConfig:
    """What `--monitoring_config_file` asks for: Prometheus metrics, and at which path."""

    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


def parse_monitoring_config(text: str, source: str = "monitoring config") -> MonitoringConfig:
    """Reads TensorFlow Serving's `--monitoring_config_file` (a text `MonitoringConfig`).

    For example `prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }`;
    the path defaults to TensorFlow Serving's, `/monitoring/prometheus/metrics`.

    Raises:
        ConfigError: On a syntax error or an unknown field (with line and column), or a path
            that does not start with `/` or lies under the REST API's `/v1/`.
    """
    proto = _parse(text, monitoring_config_class()(), source)
    prometheus = proto.prometheus_config
    path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not path.startswith("/") or path.startswith("/v1/") or path == "/v1":
        raise ConfigError(
            f"{source}: prometheus_config path {path!r} must start with '/' and lie outside /v1/"
        )
    return MonitoringConfig(bool(prometheus.enable), path)
