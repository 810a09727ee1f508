"""A REST server for exported SavedModels that speaks TensorFlow Serving's REST API.

A client written for TensorFlow Serving works unchanged:

- `GET /v1/models/NAME[/versions/N]`: version status (`model_version_status`).
- `GET /v1/models/NAME[/versions/N]/metadata`: `model_spec` and the signature defs.
- `POST /v1/models/NAME[/versions/N]:predict`: the row format (`{"instances": [...]}` answered
  with `{"predictions": [...]}`) and the columnar format (`{"inputs": {...}}` answered with
  `{"outputs": {...}}`).

Models are loaded with `tf.saved_model.load` only: the server needs neither the training code
nor the dataset builder. Every bad request gets HTTP 400 (404 for an unknown model or version)
and a JSON `{"error": ...}` that names the offending field; requests are queued per model
version and, with batching on, concurrent requests are padded to common lengths and run as
one batch (the model never lets padding change a valid step).

Each version is warmed up when it loads, before the server starts and reports it AVAILABLE
(TensorFlow Serving's `--enable_model_warmup`, on by default): the requests of the SavedModel's
`assets.extra/tf_serving_warmup_requests` run once each, so that XLA compiles the bucketed
shapes they cover (`video_reloc.export` writes one request per bucket a single pair up to 64
query and 300 reference steps meets) instead of the first client of each shape paying seconds.
A SavedModel without the file gets the same default buckets (with XLA) or one small request;
`model_warmup_shapes` replaces either.

While serving, the base paths are polled every `file_system_poll_wait_seconds` (TensorFlow
Serving's `--file_system_poll_wait_seconds`, 1 s by default; 0 or less: never), as TensorFlow
Serving does (`ModelManager`): a new version folder is loaded and warmed up (LOADING) before
requests go to it (AVAILABLE); a version the policy no longer asks for (an older one under
`latest`, or one whose folder is gone) is unloaded once another is AVAILABLE, after the requests
using it finish (UNLOADING, then END), so requests never go unanswered during the switch; a
folder without `saved_model.pb` is not a version yet, and one whose load fails is logged and
tried again when its files change, the other versions serving on.

HTTP is Werkzeug's (`werkzeug.serving.make_server`, threaded); configuration files use the
text protobuf format of TensorFlow Serving (`--model_config_file`,
`--batching_parameters_file`), read by the small parser below.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from werkzeug import exceptions as http_exceptions
from werkzeug.routing import Map, Rule
from werkzeug.serving import ThreadedWSGIServer
from werkzeug.wrappers import Request, Response

from video_reloc import warmup
from video_reloc.export import default_warmup_shapes
from video_reloc.warmup import WarmupRequest, WarmupShape

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_REST_API_PORT = 8501
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_MS = 30_000
PREDICT_METHOD = "tensorflow/serving/predict"

# Inputs `x_length` count the valid steps (axis 1) of input `x`; outputs' step axes follow the
# inputs named here, so merged and padded requests can be cut back to their own lengths.
LENGTH_SUFFIX = "_length"
OUTPUT_STEP_AXES: dict[str, tuple[str, ...]] = {
    "probabilities": ("reference",),
    "attention": ("reference", "query"),
}

logger = logging.getLogger(__name__)


class LoadCancelledError(RuntimeError):
    """A version's load abandoned because the server is stopping."""


class ServingError(Exception):
    """A request the server refuses: an HTTP status and a message naming the field."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------
# Text protobuf configuration files.


class ConfigError(ValueError):
    """A configuration file that does not parse or holds unknown fields."""


_TOKEN = re.compile(
    r"""(?P<space>\s+|\#[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<name>[A-Za-z_][\w.]*)
      | (?P<punct>[{}<>:\[\],;])""",
    re.VERBOSE,
)


def _tokenize(text: str, source: str) -> list[tuple[str, str, int]]:
    tokens, position, line = [], 0, 1
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConfigError(f"{source} line {line}: unexpected character {text[position]!r}")
        kind, value = match.lastgroup, match.group()
        if kind != "space":
            tokens.append((kind, value, line))
        line += value.count("\n")
        position = match.end()
    return tokens


def parse_text_proto(text: str, source: str = "config") -> dict[str, list[Any]]:
    """Parses protobuf text format into nested dicts, without a schema.

    Every field maps to the list of its values (fields may repeat); a message value is such a
    dict, a scalar is a `str` (strings unquoted, adjacent strings joined), `int`, `float` or,
    for an identifier (an enum or a boolean), a `str`.

    Args:
        text: The file's text.
        source: A name for error messages.

    Returns:
        The top-level message.

    Raises:
        ConfigError: On a syntax error, with its line.
    """
    tokens = _tokenize(text, source)
    position = 0

    def error(message: str) -> ConfigError:
        line = tokens[min(position, len(tokens) - 1)][2] if tokens else 1
        return ConfigError(f"{source} line {line}: {message}")

    def peek() -> tuple[str, str, int] | None:
        return tokens[position] if position < len(tokens) else None

    def take(value: str | None = None) -> tuple[str, str, int]:
        nonlocal position
        token = peek()
        if token is None:
            raise error(f"expected {value or 'a value'}, found the end of the file")
        if value is not None and token[1] != value:
            raise error(f"expected {value!r}, found {token[1]!r}")
        position += 1
        return token

    def scalar() -> Any:
        kind, value, _ = take()
        if kind == "string":
            parts = [value]
            while (token := peek()) is not None and token[0] == "string":
                parts.append(take()[1])
            return "".join(
                bytes(p[1:-1], "utf-8").decode("unicode_escape") if "\\" in p else p[1:-1]
                for p in parts
            )
        if kind == "number":
            return float(value) if any(c in value for c in ".eE") else int(value)
        if kind == "name":
            return value
        raise error(f"expected a value, found {value!r}")

    def message(closing: str | None) -> dict[str, list[Any]]:
        fields: dict[str, list[Any]] = {}
        while True:
            token = peek()
            if token is None:
                if closing is not None:
                    raise error(f"expected {closing!r}, found the end of the file")
                return fields
            if token[1] == closing:
                take()
                return fields
            kind, name, _ = take()
            if kind != "name":
                raise error(f"expected a field name, found {name!r}")
            if (token := peek()) is not None and token[1] == ":":
                take()
            token = peek()
            if token is not None and token[1] in ("{", "<"):
                take()
                values = [message("}" if token[1] == "{" else ">")]
            elif token is not None and token[1] == "[":
                take()
                values = []
                while (token := peek()) is not None and token[1] != "]":
                    if token[1] in ("{", "<"):
                        take()
                        values.append(message("}" if token[1] == "{" else ">"))
                    else:
                        values.append(scalar())
                    if (token := peek()) is not None and token[1] == ",":
                        take()
                take("]")
            else:
                values = [scalar()]
            fields.setdefault(name, []).extend(values)
            if (token := peek()) is not None and token[1] in (",", ";"):
                take()

    return message(None)


def _check_fields(message: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(message) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(allowed)}")


def _single(message: Mapping[str, list[Any]], field: str, where: str, default: Any = None):
    values = message.get(field, [])
    if len(values) > 1:
        raise ConfigError(f"{where}: field {field!r} given {len(values)} times")
    return values[0] if values else default


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One model to serve, as in TensorFlow Serving's `ModelConfig`.

    Attributes:
        name: The model's name in URLs.
        base_path: The folder holding numeric version folders.
        versions: Versions to serve; empty means the latest `num_latest`.
        num_latest: How many of the highest versions to serve when `versions` is empty;
            0 serves all.
    """

    name: str
    base_path: str
    versions: tuple[int, ...] = ()
    num_latest: int = 1


def parse_model_config(text: str, source: str = "model config") -> list[ModelConfig]:
    """Reads TensorFlow Serving's `--model_config_file` text format.

    For example::

        model_config_list {
          config { name: 'reloc' base_path: '/models/reloc' model_platform: 'tensorflow' }
          config {
            name: 'reloc_ab' base_path: '/models/ab'
            model_version_policy { specific { versions: 1 versions: 2 } }
          }
        }

    `model_version_policy` may be `latest { num_versions: N }`, `all {}` or
    `specific { versions: ... }`.

    Args:
        text: The file's text.
        source: A name for error messages.

    Returns:
        The models, in file order.

    Raises:
        ConfigError: On a syntax error, an unknown field, a missing name or base path, a
            platform other than `tensorflow` or a repeated name.
    """
    root = parse_text_proto(text, source)
    _check_fields(root, ["model_config_list"], source)
    config_list = _single(root, "model_config_list", source, {})
    _check_fields(config_list, ["config"], f"{source}: model_config_list")
    configs, names = [], set()
    for index, config in enumerate(config_list.get("config", [])):
        where = f"{source}: config #{index + 1}"
        if not isinstance(config, dict):
            raise ConfigError(f"{where}: expected a message")
        _check_fields(
            config, ["name", "base_path", "model_platform", "model_version_policy"], where
        )
        name = _single(config, "name", where)
        base_path = _single(config, "base_path", where)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: needs a name")
        if not isinstance(base_path, str) or not base_path:
            raise ConfigError(f"{where} ({name}): needs a base_path")
        platform = _single(config, "model_platform", where, "tensorflow")
        if platform != "tensorflow":
            raise ConfigError(f"{where} ({name}): model_platform {platform!r} is not 'tensorflow'")
        if name in names:
            raise ConfigError(f"{where}: model name {name!r} is used twice")
        names.add(name)
        versions, num_latest = (), 1
        policy = _single(config, "model_version_policy", where)
        if policy is not None:
            _check_fields(policy, ["latest", "all", "specific"], f"{where}: model_version_policy")
            if len(policy) != 1:
                raise ConfigError(f"{where}: model_version_policy needs exactly one policy")
            kind, (value,) = next(iter(policy.items()))
            if kind == "latest":
                _check_fields(value, ["num_versions"], f"{where}: latest")
                num_latest = int(_single(value, "num_versions", where, 1))
                if num_latest < 1:
                    raise ConfigError(f"{where}: latest num_versions must be at least 1")
            elif kind == "all":
                num_latest = 0
            else:
                _check_fields(value, ["versions"], f"{where}: specific")
                versions = tuple(int(v) for v in value.get("versions", []))
                if not versions:
                    raise ConfigError(f"{where}: specific policy lists no versions")
        configs.append(ModelConfig(name, base_path, versions, num_latest))
    if not configs:
        raise ConfigError(f"{source}: no model configured")
    return configs


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """Request batching, as TensorFlow Serving's `--batching_parameters_file` sets it.

    Attributes:
        max_batch_size: The most rows run together; a larger request runs alone.
        batch_timeout_micros: How long the first request of a batch waits for others; 0 takes
            only what is already queued (no added latency).
        max_enqueued_batches: With `max_batch_size`, bounds the queued rows; past it, requests
            get HTTP 503.
        num_batch_threads: Batches run at the same time per model version.
    """

    max_batch_size: int = 64
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingParameters:
    """Reads TensorFlow Serving's `--batching_parameters_file` text format.

    For example `max_batch_size { value: 32 } batch_timeout_micros { value: 2000 }`. Fields of
    TensorFlow Serving this server has no use for (`pad_variable_length_inputs`,
    `allowed_batch_sizes`, ...) are accepted and ignored: it always pads variable lengths.

    Raises:
        ConfigError: On a syntax error or an unknown field.
    """
    root = parse_text_proto(text, source)
    known = [field.name for field in dataclasses.fields(BatchingParameters)]
    ignored = [
        "allowed_batch_sizes",
        "pad_variable_length_inputs",
        "enable_large_batch_splitting",
        "max_execution_batch_size",
        "thread_pool_name",
    ]
    _check_fields(root, known + ignored, source)
    values = {}
    for field in known:
        wrapper = _single(root, field, source)
        if wrapper is not None:
            value = (
                _single(wrapper, "value", f"{source}: {field}")
                if isinstance(wrapper, dict)
                else wrapper
            )
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{source}: {field} must be a non-negative integer")
            values[field] = value
    parameters = BatchingParameters(**values)
    if parameters.max_batch_size < 1 or parameters.num_batch_threads < 1:
        raise ConfigError(f"{source}: max_batch_size and num_batch_threads must be at least 1")
    return parameters


# --------------------------------------------------------------------------------------------
# Models.


def find_versions(base_path: str | pathlib.Path) -> list[int]:
    """The numeric version folders under `base_path` that hold a SavedModel, ascending."""
    base = pathlib.Path(base_path)
    if not base.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in base.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").exists()
    )


def _read_saved_model(path: pathlib.Path) -> saved_model_pb2.SavedModel:
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    return saved_model


def _uses_xla(saved_model: saved_model_pb2.SavedModel) -> bool:
    """Whether a function of the SavedModel must be compiled by XLA (`jit_compile=True`)."""
    library = saved_model.meta_graphs[0].graph_def.library
    return any(function.attr["_XlaMustCompile"].b for function in library.function)


def _signature_defs(saved_model: saved_model_pb2.SavedModel) -> dict[str, Any]:
    """The SavedModel's signature defs as TensorFlow Serving's metadata JSON shows them."""
    meta_graph = saved_model.meta_graphs[0]
    return {
        name: json_format.MessageToDict(
            signature,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        for name, signature in meta_graph.signature_def.items()
        if not name.startswith("__")
    }


class _Batcher:
    """A queue per model version whose worker threads run requests, merged into batches.

    Requests whose rows fit within `max_batch_size` are merged: inputs with steps (axis 1 of an
    input `x` that has an `x_length`) are zero-padded to the longest, and each request gets its
    outputs cut back to its own rows and steps.
    """

    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
        parameters: BatchingParameters,
        name: str,
    ):
        self._run = run
        self._parameters = parameters
        self._pending: collections.deque = collections.deque()
        self._pending_rows = 0
        self._condition = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batcher-{name}-{i}", daemon=True)
            for i in range(parameters.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: dict[str, np.ndarray]) -> concurrent.futures.Future:
        """Queues one request; its future gives the outputs (numpy) or raises."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        rows = len(next(iter(inputs.values())))
        limit = self._parameters.max_batch_size * max(self._parameters.max_enqueued_batches, 1)
        with self._condition:
            if self._closed:
                raise ServingError("the server is shutting down", 503)
            if self._pending and self._pending_rows + rows > limit:
                raise ServingError(f"the queue is full ({self._pending_rows} rows); retry", 503)
            self._pending.append((inputs, rows, future))
            self._pending_rows += rows
            self._condition.notify()
        return future

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _take_batch(self) -> list[tuple[dict[str, np.ndarray], int, concurrent.futures.Future]]:
        parameters = self._parameters
        with self._condition:
            while not self._pending and not self._closed:
                self._condition.wait()
            if not self._pending:
                return []
            batch, rows = [], 0
            deadline = time.monotonic() + parameters.batch_timeout_micros / 1e6
            while True:
                while self._pending and (
                    not batch or rows + self._pending[0][1] <= parameters.max_batch_size
                ):
                    item = self._pending.popleft()
                    self._pending_rows -= item[1]
                    batch.append(item)
                    rows += item[1]
                remaining = deadline - time.monotonic()
                full = rows >= parameters.max_batch_size or self._pending
                if full or remaining <= 0 or self._closed:
                    return batch
                self._condition.wait(remaining)

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            batch = [item for item in batch if item[2].set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                results = _split(self._run(_merge([inputs for inputs, _, _ in batch])), batch)
            except Exception as error:  # noqa: BLE001 - handed to the waiting requests
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, _, future), result in zip(batch, results):
                future.set_result(result)


def _step_inputs(inputs: Mapping[str, np.ndarray]) -> list[str]:
    """Inputs whose axis 1 counts steps: those with a `<name>_length` input."""
    return [name for name in inputs if f"{name}{LENGTH_SUFFIX}" in inputs]


def _merge(requests: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenates requests along the batch, zero-padding step axes to the longest."""
    if len(requests) == 1:
        return requests[0]
    merged = {}
    for name in requests[0]:
        arrays = [request[name] for request in requests]
        if name in _step_inputs(requests[0]):
            steps = max(array.shape[1] for array in arrays)
            arrays = [
                np.pad(array, [(0, 0), (0, steps - array.shape[1])] + [(0, 0)] * (array.ndim - 2))
                for array in arrays
            ]
        merged[name] = np.concatenate(arrays, axis=0)
    return merged


def _split(outputs: dict[str, np.ndarray], batch: list) -> list[dict[str, np.ndarray]]:
    """Cuts merged outputs back into each request's rows and step counts."""
    results, offset = [], 0
    for inputs, rows, _ in batch:
        result = {}
        for name, value in outputs.items():
            value = value[offset : offset + rows]
            for axis, source in enumerate(OUTPUT_STEP_AXES.get(name, ()), start=1):
                if source in inputs:
                    value = value[(slice(None),) * axis + (slice(0, inputs[source].shape[1]),)]
            result[name] = value
        results.append(result)
        offset += rows
    return results


class ServedVersion:
    """One loaded version of a model: its signatures, their input specs and its batcher.

    Args:
        name: The model's name.
        version: The version number.
        path: The version folder.
        batching: Batching parameters; `None` runs requests one by one in arrival order.
    """

    def __init__(
        self,
        name: str,
        version: int,
        path: str | pathlib.Path,
        batching: BatchingParameters | None,
    ):
        self.name = name
        self.version = version
        self.path = pathlib.Path(path)
        self._loaded = tf.saved_model.load(str(self.path))
        saved_model = _read_saved_model(self.path)
        self.signature_defs = _signature_defs(saved_model)
        self.uses_xla = _uses_xla(saved_model)
        self.warmup_seconds: float | None = None  # set by `warm_up`
        self.signatures = {
            key: fn for key, fn in self._loaded.signatures.items() if key in self.signature_defs
        }
        self.input_specs: dict[str, dict[str, tf.TensorSpec]] = {
            key: dict(fn.structured_input_signature[1]) for key, fn in self.signatures.items()
        }
        parameters = batching or BatchingParameters(max_batch_size=1, batch_timeout_micros=0)
        self._batchers = {
            key: _Batcher(self._runner(key), parameters, f"{name}-{version}-{key}")
            for key in self.signatures
        }

    def _runner(self, signature_name: str):
        function = self.signatures[signature_name]

        def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
            return {k: v.numpy() for k, v in outputs.items()}

        return run

    def warmup_requests(
        self, shapes: Sequence[WarmupShape] | None = None
    ) -> tuple[list[WarmupRequest], str]:
        """The requests that warm this version up, and where they come from.

        Args:
            shapes: Requests of the default signature at these shapes; `None`: the SavedModel's
                `assets.extra/tf_serving_warmup_requests`, else the default buckets of
                `video_reloc.export` (one small request without XLA).

        Raises:
            ValueError: If the file is unreadable, or the shapes do not suit the signature.
        """
        if shapes is not None:
            specs = self.input_specs.get(DEFAULT_SIGNATURE, {})
            return warmup.requests_for_shapes(shapes, specs), "--model_warmup_shapes"
        recorded = warmup.read_warmup_requests(self.path)
        if recorded is not None:
            return recorded, warmup.WARMUP_REQUESTS_PATH
        specs = self.input_specs.get(DEFAULT_SIGNATURE, {})
        shapes = default_warmup_shapes(self.uses_xla)
        try:
            requests = warmup.requests_for_shapes(shapes, specs)
        except ValueError as error:
            logger.warning("Model %s version %d: no warm-up (%s)", self.name, self.version, error)
            return [], "nothing"
        kind = "XLA buckets" if self.uses_xla else "no XLA"
        return requests, f"the default shapes ({kind}; the SavedModel has no warm-up file)"

    def warm_up(
        self,
        requests: Sequence[WarmupRequest],
        source: str = "",
        should_stop: Callable[[], bool] | None = None,
    ) -> float:
        """Runs each request once through its signature, as a client's request runs.

        Args:
            requests: The warm-up requests.
            source: Where they come from, for the log.
            should_stop: Asked before each request; `True` abandons the warm-up (the server
                is stopping) with `LoadCancelledError`.

        Returns:
            The seconds taken.

        Raises:
            RuntimeError: If a request fails (the version must not be served then, as in
                TensorFlow Serving).
            LoadCancelledError: If `should_stop` said so.
        """
        start = time.monotonic()
        logger.info(
            "Warming up model %s version %d: %d request(s) from %s",
            self.name,
            self.version,
            len(requests),
            source or "the caller",
        )
        for index, request in enumerate(requests):
            if should_stop is not None and should_stop():
                raise LoadCancelledError(
                    f"model {self.name!r} version {self.version}: warm-up abandoned after "
                    f"{index} of {len(requests)} request(s): the server is stopping"
                )
            began = time.monotonic()
            try:
                if request.signature_name not in self.signatures:
                    raise ValueError(f"no signature {request.signature_name!r}")
                self._runner(request.signature_name)(request.inputs)
            except (ValueError, TypeError, tf.errors.OpError) as error:
                raise RuntimeError(
                    f"model {self.name!r} version {self.version}: warm-up request {index + 1} "
                    f"({request.describe()}) failed: {error}"
                ) from error
            logger.info(
                "Warm-up %d/%d of model %s version %d (%s): %.2f s",
                index + 1,
                len(requests),
                self.name,
                self.version,
                request.describe(),
                time.monotonic() - began,
            )
        self.warmup_seconds = time.monotonic() - start
        logger.info(
            "Warmed up model %s version %d: %d request(s) in %.1f s",
            self.name,
            self.version,
            len(requests),
            self.warmup_seconds,
        )
        return self.warmup_seconds

    def predict(
        self, signature_name: str, inputs: dict[str, np.ndarray], timeout_s: float
    ) -> dict[str, np.ndarray]:
        """Runs validated inputs through the queue; blocks for the answer."""
        future = self._batchers[signature_name].submit(inputs)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ServingError(f"the model did not answer within {timeout_s:g} s", 503) from None
        except tf.errors.InvalidArgumentError as error:
            raise ServingError(f"the model refused the inputs: {error.message}") from None

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()


def _warm_up(
    served: ServedVersion,
    shapes: Sequence[WarmupShape] | None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    try:
        requests, source = served.warmup_requests(shapes)
    except (ValueError, tf.errors.OpError) as error:
        raise RuntimeError(
            f"model {served.name!r} version {served.version}: no warm-up requests: {error}"
        ) from error
    if requests:
        served.warm_up(requests, source, should_stop=should_stop)


def _aspired_versions(config: ModelConfig, found: Sequence[int]) -> set[int]:
    """The versions the config's version policy asks for among those found on disk."""
    if config.versions:
        return set(config.versions) & set(found)
    if config.num_latest == 0:
        return set(found)
    return set(sorted(found)[-config.num_latest :])


def _fingerprint(path: pathlib.Path) -> tuple[tuple[str, int, int], ...]:
    """(file, size, mtime) of each file under `path`: changes when anything is rewritten."""
    files = []
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            files.append(
                (os.path.relpath(os.path.join(folder, name), path), stat.st_size, stat.st_mtime_ns)
            )
    return tuple(sorted(files))


_ERROR_CODE_NAMES = {
    value: name
    for name, value in vars(tf.errors).items()
    if name.isupper() and isinstance(value, int) and not isinstance(value, bool)
}


def _error_code(error: BaseException) -> str:
    """TensorFlow's error code name for a failed load, as TensorFlow Serving reports it."""
    if isinstance(error, tf.errors.OpError):
        return _ERROR_CODE_NAMES.get(error.error_code, "UNKNOWN")
    if isinstance(error, FileNotFoundError):
        return "NOT_FOUND"
    return "UNKNOWN"


# TensorFlow Serving's version states (`ServableState::ManagerState`, as the REST API shows it).
LOADING = "LOADING"
AVAILABLE = "AVAILABLE"
UNLOADING = "UNLOADING"
END = "END"

DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS = 1.0
LOAD_RETRY_INTERVAL_S = 60.0
"""A version whose load failed is retried when its files change, else after this long."""


@dataclasses.dataclass(eq=False)
class _Entry:
    """One version of a model as the manager knows it."""

    state: str
    served: ServedVersion | None = None
    error_code: str = "OK"
    error_message: str = ""
    refs: int = 0  # requests using `served` now
    fingerprint: tuple | None = None  # of the files of a failed load
    failed_at: float | None = None


class ModelManager:
    """The versions of each model and their states, kept in step with the base paths.

    `load` loads what the version policies ask for at start (strictly: any failure raises);
    `poll` then brings the served versions in line with the version folders found on disk, as
    TensorFlow Serving's file system polling and availability-preserving policy do:

    - a version the policy asks for that is not loaded is loaded (highest first) and warmed up
      (state LOADING) and only then served (AVAILABLE);
    - a loaded version the policy no longer asks for is unloaded once a version it asks for is
      AVAILABLE (or when it asks for none, or to keep only the highest of several): it stops
      taking requests (UNLOADING) and is closed when the requests using it have finished (END);
    - a version folder without `saved_model.pb` is not a version yet; a version whose load fails
      is logged (naming its path), reported END with the error and retried on a later poll when
      its files change (else after `LOAD_RETRY_INTERVAL_S`), the other versions serving on;
    - a base path that is not a folder keeps its loaded versions (logged); one that holds no
      version at all has them all unloaded (TensorFlow Serving's default, logged).

    Request handlers take a version with `acquire` (thread-safe with the polling).

    Args:
        configs: The models.
        batching: Batching parameters shared by all versions; `None` disables batching.
        enable_model_warmup: Whether to run each version's warm-up requests before serving it
            (see `ServedVersion.warmup_requests`).
        model_warmup_shapes: Warm-up shapes for every version, instead of its own requests.
    """

    def __init__(
        self,
        configs: Sequence[ModelConfig] = (),
        batching: BatchingParameters | None = None,
        enable_model_warmup: bool = True,
        model_warmup_shapes: Sequence[WarmupShape] | None = None,
    ):
        self.configs = list(configs)
        self.batching = batching
        self.enable_model_warmup = enable_model_warmup
        self.model_warmup_shapes = model_warmup_shapes
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._models: dict[str, dict[int, _Entry]] = {c.name: {} for c in self.configs}
        self._problems: dict[str, str | None] = {}
        self._closed = False

    @classmethod
    def of_versions(cls, models: Mapping[str, Mapping[int, ServedVersion]]) -> ModelManager:
        """A manager of versions loaded already (as `load_models` returns), with nothing to poll."""
        manager = cls()
        for name, versions in models.items():
            manager._models[name] = {
                version: _Entry(AVAILABLE, served) for version, served in versions.items()
            }
        return manager

    # Loading.

    def load(self) -> None:
        """Loads and warms up the versions each config asks for (all or nothing).

        Raises:
            FileNotFoundError: If a base path holds no version (or not a requested one).
            RuntimeError: If a warm-up request fails.
            Exception: Whatever loading a SavedModel raises.
        """
        try:
            for config in self.configs:
                found = find_versions(config.base_path)
                if not found:
                    hint = ""
                    if (pathlib.Path(config.base_path) / "saved_model.pb").exists():
                        hint = " (it is a SavedModel itself: pass its parent, which holds versions)"
                    raise FileNotFoundError(
                        f"model {config.name!r}: no numeric version folder with a SavedModel "
                        f"under {config.base_path}{hint}"
                    )
                missing = sorted(set(config.versions) - set(found))
                if missing:
                    raise FileNotFoundError(
                        f"model {config.name!r}: versions {missing} not found under "
                        f"{config.base_path} (found {found})"
                    )
                for version in sorted(_aspired_versions(config, found)):
                    self._load(config, version, strict=True)
        except BaseException:
            self.close()
            raise

    def _load(
        self,
        config: ModelConfig,
        version: int,
        strict: bool,
        should_stop: Callable[[], bool] | None = None,
    ) -> bool:
        """Loads and warms up one version, then serves it; whether it is AVAILABLE."""
        name = config.name
        path = pathlib.Path(config.base_path) / str(version)
        fingerprint = _fingerprint(path)
        entry = _Entry(LOADING)
        with self._lock:
            if self._closed:
                return False
            self._models.setdefault(name, {})[version] = entry
        logger.info("Loading model %s version %d from %s", name, version, path)
        served = None
        try:
            served = ServedVersion(name, version, path, self.batching)
            if self.enable_model_warmup:
                _warm_up(served, self.model_warmup_shapes, should_stop)
        except Exception as error:  # noqa: BLE001 - a bad version must not stop the server
            if served is not None:
                served.close()
            cancelled = isinstance(error, LoadCancelledError)
            with self._lock:
                entry.state = END
                if not cancelled:
                    entry.error_code = _error_code(error)
                    entry.error_message = f"loading {path} failed: {error}"
                    entry.fingerprint, entry.failed_at = fingerprint, time.monotonic()
                serving = self._available(name)
            if strict:
                raise
            if cancelled:
                logger.info("%s", error)
            else:
                logger.error(
                    "Model %s version %d: loading %s failed, so it is not served (still serving "
                    "versions %s); retrying when its files change: %s: %s",
                    name,
                    version,
                    path,
                    serving,
                    type(error).__name__,
                    error,
                )
            return False
        with self._lock:
            closed = self._closed
            if not closed:
                entry.served, entry.state = served, AVAILABLE
            serving = self._available(name)
        if closed:
            served.close()
            entry.state = END
            return False
        logger.info(
            "Model %s version %d is AVAILABLE (serving versions %s)", name, version, serving
        )
        return True

    # Polling.

    def poll(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Brings each model's versions in line with its base path once; never raises.

        Args:
            should_stop: Asked between steps; `True` ends the poll early (the server stops).
        """
        with self._poll_lock:
            for config in self.configs:
                if should_stop() or self._closed:
                    return
                try:
                    self._poll_model(config, should_stop)
                except Exception:  # noqa: BLE001 - polling goes on
                    logger.exception(
                        "Polling model %s under %s failed", config.name, config.base_path
                    )

    def _report(self, name: str, problem: str | None) -> None:
        """Logs a model's base path problem once, until it changes."""
        if self._problems.get(name) != problem and problem is not None:
            logger.warning("Model %s: %s", name, problem)
        self._problems[name] = problem

    def _poll_model(self, config: ModelConfig, should_stop: Callable[[], bool]) -> None:
        base = pathlib.Path(config.base_path)
        if not base.is_dir():
            self._report(
                config.name, f"base path {base} is not a folder; keeping the versions loaded"
            )
            return
        found = find_versions(base)
        aspired = _aspired_versions(config, found)
        problem = None
        if not found:
            problem = (
                f"no numeric version folder with a SavedModel under {base}; unloading its versions"
            )
        elif config.versions and not aspired:
            problem = f"none of versions {sorted(config.versions)} under {base} (found {found})"
        self._report(config.name, problem)
        self._unload_unaspired(config.name, aspired)
        for version in sorted(aspired, reverse=True):
            if should_stop():
                return
            if self._wants_load(config.name, version, base / str(version)):
                self._load(config, version, strict=False, should_stop=should_stop)
                self._unload_unaspired(config.name, aspired)

    def _wants_load(self, name: str, version: int, path: pathlib.Path) -> bool:
        with self._lock:
            entry = self._models.get(name, {}).get(version)
        if entry is None:
            return True
        if entry.state != END:
            return False
        if entry.failed_at is None:
            return True  # unloaded earlier, its folder back again
        return (
            _fingerprint(path) != entry.fingerprint
            or time.monotonic() - entry.failed_at >= LOAD_RETRY_INTERVAL_S
        )

    def _unload_unaspired(self, name: str, aspired: set[int]) -> None:
        """Unloads the versions no longer asked for, lowest first, as TensorFlow Serving's
        `AvailabilityPreservingPolicy` does.

        Only while no version is asked for, one that is asked for is AVAILABLE, or more than
        one unwanted version is: a wanted version that fails to load leaves the old one serving.
        """
        with self._lock:
            entries = self._models.get(name, {})
            while True:
                unwanted = sorted(
                    v for v, e in entries.items() if e.state == AVAILABLE and v not in aspired
                )
                wanted_available = any(
                    v in entries and entries[v].state == AVAILABLE for v in aspired
                )
                if not unwanted or not (not aspired or wanted_available or len(unwanted) > 1):
                    return
                version = unwanted[0]
                entry = entries[version]
                entry.state = UNLOADING
                logger.info(
                    "Unloading model %s version %d (%d request(s) in flight; serving versions %s)",
                    name,
                    version,
                    entry.refs,
                    self._available(name),
                )
                if entry.refs == 0:
                    self._finish_unload(name, version, entry)

    def _finish_unload(self, name: str, version: int, entry: _Entry) -> None:
        """Closes an UNLOADING version that no request uses; under `_lock`."""
        if entry.served is not None:
            entry.served.close()
        entry.served, entry.state = None, END
        logger.info("Unloaded model %s version %d", name, version)

    # Serving.

    def _available(self, name: str) -> list[int]:
        """The AVAILABLE versions of a model, ascending; under `_lock`."""
        return sorted(v for v, e in self._models.get(name, {}).items() if e.state == AVAILABLE)

    def _model(self, name: str) -> dict[int, _Entry]:
        if name not in self._models:
            raise ServingError(
                f"model: {name!r} is not served (serving {sorted(self._models)})", 404
            )
        return self._models[name]

    @contextlib.contextmanager
    def acquire(self, name: str, version: str | int | None = None) -> Iterator[ServedVersion]:
        """The AVAILABLE version asked for (`None`: the highest), kept loaded while in use.

        Raises:
            ServingError: 404 for an unknown model, or a version that is not AVAILABLE.
        """
        with self._lock:
            entries = self._model(name)
            available = self._available(name)
            if version is None:
                if not available:
                    raise ServingError(f"model: {name!r} has no AVAILABLE version", 404)
                entry = entries[available[-1]]
            else:
                text = str(version)
                entry = entries.get(int(text)) if text.isdigit() else None
                if entry is None or entry.state != AVAILABLE:
                    state = f"it is {entry.state}; " if entry is not None else ""
                    raise ServingError(
                        f"version: {text!r} of model {name!r} is not served ({state}serving "
                        f"{available})",
                        404,
                    )
            entry.refs += 1
            served = entry.served
        try:
            yield served
        finally:
            with self._lock:
                entry.refs -= 1
                if entry.refs == 0 and entry.state == UNLOADING:
                    self._finish_unload(name, served.version, entry)

    def status(self, name: str, version: str | int | None = None) -> list[dict[str, Any]]:
        """TensorFlow Serving's `model_version_status` of a model's versions, highest first.

        Every version the manager has loaded or tried to load is listed, with its state
        (LOADING, AVAILABLE, UNLOADING or END) and, for a failed load, the error.

        Raises:
            ServingError: 404 for an unknown model, or a version never loaded.
        """
        with self._lock:
            entries = self._model(name)
            if version is None:
                chosen = sorted(entries, reverse=True)
                if not chosen:
                    raise ServingError(f"model: {name!r} has no version loaded yet", 404)
            else:
                text = str(version)
                if not text.isdigit() or int(text) not in entries:
                    raise ServingError(
                        f"version: {text!r} of model {name!r} is not served (serving "
                        f"{self._available(name)})",
                        404,
                    )
                chosen = [int(text)]
            return [
                {
                    "version": str(v),
                    "state": entries[v].state,
                    "status": {
                        "error_code": entries[v].error_code,
                        "error_message": entries[v].error_message,
                    },
                }
                for v in chosen
            ]

    def versions(self) -> dict[str, dict[int, ServedVersion]]:
        """`{name: {version: ServedVersion}}` of the AVAILABLE versions now."""
        with self._lock:
            return {
                name: {v: e.served for v, e in entries.items() if e.state == AVAILABLE}
                for name, entries in self._models.items()
            }

    def close(self) -> None:
        """Closes every loaded version; a load finishing later is closed, not served."""
        with self._lock:
            self._closed = True
            for entries in self._models.values():
                for entry in entries.values():
                    if entry.served is not None:
                        entry.served.close()
                        entry.served, entry.state = None, END


def load_models(
    configs: Sequence[ModelConfig],
    batching: BatchingParameters | None = None,
    enable_model_warmup: bool = True,
    model_warmup_shapes: Sequence[WarmupShape] | None = None,
) -> dict[str, dict[int, ServedVersion]]:
    """Loads the versions each config asks for, and warms each up (`ModelManager.load`).

    Args:
        configs: The models.
        batching: Batching parameters shared by all versions; `None` disables batching.
        enable_model_warmup: Whether to run each version's warm-up requests before returning
            (see `ServedVersion.warmup_requests`).
        model_warmup_shapes: Warm-up shapes for every version, instead of its own requests.

    Returns:
        `{name: {version: ServedVersion}}`.

    Raises:
        FileNotFoundError: If a base path holds no version (or not a requested one).
        RuntimeError: If a warm-up request fails.
    """
    manager = ModelManager(configs, batching, enable_model_warmup, model_warmup_shapes)
    manager.load()
    return manager.versions()


# --------------------------------------------------------------------------------------------
# Request parsing and validation.


def _as_array(value: Any, field: str, spec: tf.TensorSpec, rank: int) -> np.ndarray:
    """Converts one JSON value to an array of `spec`'s dtype and `rank`, or refuses it."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        array = None
    if array is None or array.dtype == object:
        raise ServingError(
            f"{field}: not a rectangular array of numbers (rows of different lengths?)"
        )
    if array.size == 0:
        raise ServingError(f"{field}: empty (shape {list(array.shape)}); needs at least one step")
    if array.dtype.kind not in "iuf":
        raise ServingError(
            f"{field}: wrong type; expected numbers ({spec.dtype.name}), got {array.dtype.kind!r} "
            f"values such as {array.flat[0]!r}"
        )
    if array.ndim != rank:
        raise ServingError(
            f"{field}: expected {rank} dimension(s) {_shape_text(spec, rank)}, got shape "
            f"{list(array.shape)}"
        )
    if spec.dtype.is_floating:
        with np.errstate(over="ignore", invalid="ignore"):
            array = array.astype(spec.dtype.as_numpy_dtype)
        if not np.all(np.isfinite(array)):
            raise ServingError(f"{field}: NaN or infinite values (or beyond {spec.dtype.name})")
    else:
        if array.dtype.kind == "f":
            raise ServingError(f"{field}: wrong type; expected integers ({spec.dtype.name})")
        info = np.iinfo(spec.dtype.as_numpy_dtype)
        if array.min() < info.min or array.max() > info.max:
            raise ServingError(f"{field}: values beyond {spec.dtype.name}")
        array = array.astype(spec.dtype.as_numpy_dtype)
    # Static dimensions of the signature (the feature dimension D).
    static = spec.shape.as_list()[-rank:] if rank else []
    for axis, (size, expected) in enumerate(zip(array.shape, static)):
        if expected is not None and size != expected:
            what = "feature dimension" if axis == rank - 1 else f"dimension {axis}"
            raise ServingError(
                f"{field}: {what} is {size}, the model expects {expected} {_shape_text(spec, rank)}"
            )
    return array


def _shape_text(spec: tf.TensorSpec, rank: int) -> str:
    dims = spec.shape.as_list()[-rank:] if rank else []
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _check_lengths(inputs: Mapping[str, np.ndarray], field: Callable[[str], str]) -> None:
    """Each `x_length` must be within 1 and the steps of `x`."""
    for name in _step_inputs(inputs):
        lengths = inputs[f"{name}{LENGTH_SUFFIX}"]
        steps = inputs[name].shape[1]
        bad = np.flatnonzero((lengths < 1) | (lengths > steps))
        if bad.size:
            index = int(bad[0])
            raise ServingError(
                f"{field(f'{name}{LENGTH_SUFFIX}')}[{index}]: {int(lengths[index])} is outside "
                f"1..{steps}, the steps of {field(name)}"
            )


def parse_predict_request(
    body: Any, specs: Mapping[str, Mapping[str, tf.TensorSpec]]
) -> tuple[str, dict[str, np.ndarray], bool, list[dict[str, int]] | None]:
    """Validates a `:predict` body against the signatures' input specs.

    Args:
        body: The decoded JSON body.
        specs: `{signature_name: {input_name: TensorSpec}}`.

    Returns:
        `(signature_name, inputs, row_format, steps)`: the batch as arrays, whether the body
        used `instances`, and for the row format each instance's own step counts.

    Raises:
        ServingError: For anything wrong, naming the field.
    """
    if not isinstance(body, dict):
        raise ServingError("body: expected a JSON object with 'instances' or 'inputs'")
    unknown = sorted(set(body) - {"signature_name", "instances", "inputs"})
    if unknown:
        raise ServingError(f"body: unknown field(s) {unknown}; expected 'instances' or 'inputs'")
    signature_name = body.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature_name, str) or signature_name not in specs:
        raise ServingError(
            f"signature_name: {signature_name!r} is not a signature of the model "
            f"(available: {sorted(specs)})"
        )
    spec = specs[signature_name]
    if ("instances" in body) == ("inputs" in body):
        raise ServingError("body: give exactly one of 'instances' (row) or 'inputs' (columnar)")

    def check_keys(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ServingError(f"{where}: expected an object with keys {sorted(spec)}")
        missing = sorted(set(spec) - set(value))
        if missing:
            raise ServingError(f"{where}: missing input(s) {missing}")
        extra = sorted(set(value) - set(spec))
        if extra:
            raise ServingError(f"{where}: unknown input(s) {extra}; expected {sorted(spec)}")

    if "inputs" in body:
        check_keys(body["inputs"], "inputs")
        inputs = {
            name: _as_array(body["inputs"][name], f"inputs.{name}", s, s.shape.rank)
            for name, s in spec.items()
        }
        batch_sizes = {name: array.shape[0] for name, array in inputs.items()}
        if len(set(batch_sizes.values())) > 1:
            raise ServingError(f"inputs: batch sizes differ: {batch_sizes}")
        _check_lengths(inputs, lambda name: f"inputs.{name}")
        return signature_name, inputs, False, None

    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise ServingError("instances: expected a non-empty list of objects")
    rows = []
    for index, instance in enumerate(instances):
        where = f"instances[{index}]"
        check_keys(instance, where)
        row = {
            name: _as_array(instance[name], f"{where}.{name}", s, s.shape.rank - 1)[None]
            for name, s in spec.items()
        }
        _check_lengths(row, lambda name, where=where: f"{where}.{name}")
        rows.append(row)
    steps = [{name: row[name].shape[1] for name in _step_inputs(row)} for row in rows]
    return signature_name, _merge(rows), True, steps


def _row_predictions(
    outputs: Mapping[str, np.ndarray], steps: list[dict[str, int]]
) -> list[dict[str, Any]]:
    predictions = []
    for index, own in enumerate(steps):
        prediction = {}
        for name, value in outputs.items():
            value = value[index]
            for axis, source in enumerate(OUTPUT_STEP_AXES.get(name, ())):
                if source in own:
                    value = value[(slice(None),) * axis + (slice(0, own[source]),)]
            prediction[name] = value.tolist()
        predictions.append(prediction)
    return predictions


# --------------------------------------------------------------------------------------------
# The WSGI application.


def _json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


class RestApi:
    """The WSGI application of TensorFlow Serving's REST API over loaded models.

    Args:
        models: A `ModelManager`, or `{name: {version: ServedVersion}}` (see `load_models`).
        max_request_bytes: Bodies beyond this get HTTP 400.
        timeout_ms: A request waiting longer than this for the model gets HTTP 503.
    """

    def __init__(
        self,
        models: ModelManager | Mapping[str, Mapping[int, ServedVersion]],
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ):
        self.manager = (
            models if isinstance(models, ModelManager) else ModelManager.of_versions(models)
        )
        self.max_request_bytes = max_request_bytes
        self.timeout_s = timeout_ms / 1000.0
        prefix = "/v1/models/<name>"
        versioned = prefix + "/versions/<version>"
        self.url_map = Map(
            [
                Rule(prefix, methods=["GET"], endpoint="status"),
                Rule(versioned, methods=["GET"], endpoint="status"),
                Rule(prefix + "/labels/<label>", methods=["GET"], endpoint="label"),
                Rule(prefix + "/metadata", methods=["GET"], endpoint="metadata"),
                Rule(versioned + "/metadata", methods=["GET"], endpoint="metadata"),
                Rule(prefix + "/labels/<label>/metadata", methods=["GET"], endpoint="label"),
                Rule(prefix + ":predict", methods=["POST"], endpoint="predict"),
                Rule(versioned + ":predict", methods=["POST"], endpoint="predict"),
                Rule(prefix + "/labels/<label>:predict", methods=["POST"], endpoint="label"),
                Rule(prefix + ":<verb>", methods=["POST"], endpoint="verb"),
                Rule(versioned + ":<verb>", methods=["POST"], endpoint="verb"),
            ]
        )

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            endpoint, arguments = self.url_map.bind_to_environ(environ).match()
            response = getattr(self, f"_{endpoint}")(request, **arguments)
        except ServingError as error:
            response = _json_response({"error": str(error)}, error.status)
        except http_exceptions.HTTPException as error:
            response = _json_response({"error": error.description}, error.code or 500)
        except Exception as error:  # noqa: BLE001 - a server bug must not kill the server
            logger.exception("Internal error on %s %s", request.method, request.path)
            response = _json_response({"error": f"internal error: {error}"}, 500)
        return response(environ, start_response)

    def _status(self, request: Request, name: str, version: str | None = None) -> Response:
        return _json_response({"model_version_status": self.manager.status(name, version)})

    def _metadata(self, request: Request, name: str, version: str | None = None) -> Response:
        with self.manager.acquire(name, version) as served:
            return _json_response(
                {
                    "model_spec": {
                        "name": name,
                        "signature_name": "",
                        "version": str(served.version),
                    },
                    "metadata": {"signature_def": {"signature_def": served.signature_defs}},
                }
            )

    def _label(self, request: Request, name: str, label: str) -> Response:
        self.manager.status(name)
        raise ServingError(f"label: {label!r} is not defined for model {name!r}", 404)

    def _verb(self, request: Request, name: str, verb: str, version: str | None = None):
        with self.manager.acquire(name, version):
            raise ServingError(f"verb: ':{verb}' is not supported; use ':predict'", 400)

    def _read_json(self, request: Request) -> Any:
        limit = self.max_request_bytes
        stream = request.environ["wsgi.input"]
        length = request.content_length
        if length is not None and length > limit:
            _drain(stream, length)
            raise ServingError(f"body: {length} bytes, over the limit of {limit} bytes")
        data = request.stream.read(limit + 1) if length is None else request.get_data()
        if len(data) > limit:
            _drain(request.stream, None)
            raise ServingError(f"body: over the limit of {limit} bytes")
        if not data:
            raise ServingError("body: empty; expected a JSON object")
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as error:
            raise ServingError(f"body: not valid JSON ({error})") from None

    def _predict(self, request: Request, name: str, version: str | None = None) -> Response:
        body = self._read_json(request)
        with self.manager.acquire(name, version) as served:
            signature_name, inputs, row_format, steps = parse_predict_request(
                body, served.input_specs
            )
            outputs = served.predict(signature_name, inputs, self.timeout_s)
        if row_format:
            return _json_response({"predictions": _row_predictions(outputs, steps)})
        return _json_response({"outputs": {k: v.tolist() for k, v in outputs.items()}})


def _drain(stream, length: int | None, cap: int = 1 << 30) -> None:
    """Reads and drops a refused body, so the client gets the answer instead of a reset."""
    remaining = cap if length is None else min(length, cap)
    while remaining > 0:
        chunk = stream.read(min(1 << 16, remaining))
        if not chunk:
            return
        remaining -= len(chunk)


# --------------------------------------------------------------------------------------------
# The server.


class _Poller:
    """The thread that polls a manager's base paths every `wait_seconds`."""

    def __init__(self, manager: ModelManager, wait_seconds: float):
        self.manager = manager
        self.wait_seconds = wait_seconds
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="model-version-poller", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.wait_seconds):
            self.manager.poll(self._stop.is_set)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stops polling; a load in progress stops at its next warm-up request."""
        self._stop.set()
        if self.thread is not threading.current_thread() and self.thread.is_alive():
            self.thread.join(timeout_s)
            if self.thread.is_alive():
                logger.warning("The model version poller did not stop within %g s", timeout_s)


class ModelServer(ThreadedWSGIServer):
    """Werkzeug's threaded WSGI server of a `RestApi`, owning the thread that polls its models.

    `shutdown()` and `server_close()` stop the polling; the versions stay loaded (see
    `ModelManager.close`).
    """

    def __init__(self, host: str, port: int, app: RestApi):
        super().__init__(host, port, app)
        self.manager = app.manager
        self._poller: _Poller | None = None

    @property
    def polling(self) -> bool:
        """Whether the base paths are being polled."""
        return self._poller is not None and self._poller.thread.is_alive()

    def start_polling(self, wait_seconds: float) -> None:
        """Polls the manager's base paths every `wait_seconds` (0 or less: never)."""
        if wait_seconds > 0 and not self.polling:
            logger.info("Polling the models' base paths every %g s", wait_seconds)
            self._poller = _Poller(self.manager, wait_seconds)

    def stop_polling(self) -> None:
        """Stops the polling and waits for it, from whichever thread (Werkzeug's
        `serve_forever` calls `server_close` as it ends, while `shutdown` may be waiting)."""
        if self._poller is not None:
            self._poller.stop()

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self.stop_polling()

    def server_close(self) -> None:
        try:
            self.stop_polling()
        finally:
            super().server_close()


def start_server(
    models: ModelManager | Mapping[str, Mapping[int, ServedVersion]],
    port: int = DEFAULT_REST_API_PORT,
    host: str = "0.0.0.0",
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    file_system_poll_wait_seconds: float | None = None,
) -> ModelServer:
    """Starts a threaded server in a background thread (port 0 picks a free one).

    Args:
        models: A loaded `ModelManager`, whose base paths the server polls; or versions loaded
            already, `{name: {version: ServedVersion}}` (see `load_models`), served as they are.
        port: The HTTP port.
        host: The address to listen on.
        max_request_bytes: Bodies beyond this get HTTP 400.
        timeout_ms: A request waiting longer for the model gets HTTP 503.
        file_system_poll_wait_seconds: Seconds between polls of a manager's base paths (see
            `ModelManager.poll`); 0 or less: none; `None`: 1 s for a manager, none for
            versions loaded already (there is nothing to poll).

    Returns:
        The server: `server.port` is its port, `server.shutdown()` stops it and its polling.

    Raises:
        ValueError: If polling is asked for versions loaded already.
    """
    is_manager = isinstance(models, ModelManager)
    if file_system_poll_wait_seconds is None:
        file_system_poll_wait_seconds = DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS if is_manager else 0
    if file_system_poll_wait_seconds > 0 and not is_manager:
        raise ValueError("polling the base paths needs a ModelManager, not loaded versions")
    app = RestApi(models, max_request_bytes=max_request_bytes, timeout_ms=timeout_ms)
    server = ModelServer(host, port, app)
    thread = threading.Thread(target=server.serve_forever, name="rest-api", daemon=True)
    thread.start()
    server.start_polling(file_system_poll_wait_seconds)
    return server


def model_configs_from_flags(
    model_name: str | None, model_base_path: str | None, model_config_file: str | None
) -> list[ModelConfig]:
    """The models to serve, from TensorFlow Serving's flags (one model, or a config file)."""
    if model_config_file:
        if model_base_path:
            raise ValueError("give either --model_config_file or --model_base_path, not both")
        path = pathlib.Path(model_config_file)
        return parse_model_config(path.read_text(encoding="utf-8"), source=str(path))
    if not model_base_path:
        raise ValueError("give --model_base_path (with --model_name) or --model_config_file")
    return [ModelConfig(model_name or "default", model_base_path)]


def serve(
    rest_api_port: int = DEFAULT_REST_API_PORT,
    model_name: str | None = "default",
    model_base_path: str | None = None,
    model_config_file: str | None = None,
    enable_batching: bool = True,
    batching_parameters_file: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    rest_api_timeout_in_ms: int = DEFAULT_TIMEOUT_MS,
    rest_api_host: str = "0.0.0.0",
    enable_model_warmup: bool = True,
    model_warmup_shapes: Sequence[WarmupShape] | None = None,
    file_system_poll_wait_seconds: float = DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS,
) -> None:
    """Loads and warms up the models, then serves TensorFlow Serving's REST API until interrupted.

    Args:
        rest_api_port: The HTTP port.
        model_name: The model's name in URLs, with `model_base_path`.
        model_base_path: A folder of numeric versions; the highest is served.
        model_config_file: TensorFlow Serving's text-format model config, for several models.
        enable_batching: Whether concurrent requests run as one batch (else one by one).
        batching_parameters_file: TensorFlow Serving's text-format batching parameters.
        max_request_bytes: Bodies beyond this get HTTP 400.
        rest_api_timeout_in_ms: A request waiting longer for the model gets HTTP 503.
        rest_api_host: The address to listen on.
        enable_model_warmup: Whether to warm each version up before serving (TensorFlow
            Serving's flag): its `assets.extra/tf_serving_warmup_requests`, else default shapes.
        model_warmup_shapes: Warm-up shapes for every version instead.
        file_system_poll_wait_seconds: Seconds between polls of the base paths for new or
            removed versions (TensorFlow Serving's flag; see `ModelManager`); 0 or less: the
            versions loaded at start are served until the end.
    """
    configs = model_configs_from_flags(model_name, model_base_path, model_config_file)
    batching = None
    if enable_batching:
        batching = BatchingParameters()
        if batching_parameters_file:
            path = pathlib.Path(batching_parameters_file)
            batching = parse_batching_parameters(path.read_text(encoding="utf-8"), str(path))
    manager = ModelManager(configs, batching, enable_model_warmup, model_warmup_shapes)
    manager.load()
    try:
        app = RestApi(
            manager, max_request_bytes=max_request_bytes, timeout_ms=rest_api_timeout_in_ms
        )
        server = ModelServer(rest_api_host, rest_api_port, app)
        served = {name: sorted(versions) for name, versions in manager.versions().items()}
        logger.info("Serving %s on http://%s:%d", served, rest_api_host, server.port)
        print(f"Serving {served} on http://{rest_api_host}:{server.port}", flush=True)
        server.start_polling(file_system_poll_wait_seconds)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        manager.close()


__all__ = [
    "AVAILABLE",
    "BatchingParameters",
    "ConfigError",
    "END",
    "LOADING",
    "LoadCancelledError",
    "ModelConfig",
    "ModelManager",
    "ModelServer",
    "RestApi",
    "ServedVersion",
    "ServingError",
    "UNLOADING",
    "find_versions",
    "load_models",
    "model_configs_from_flags",
    "parse_batching_parameters",
    "parse_model_config",
    "parse_predict_request",
    "parse_text_proto",
    "serve",
    "start_server",
]
