"""TensorFlow Serving's REST API as a WSGI application (`RestApi`).

The `:predict` body is validated against the signature's input specs (`parse_predict_request`):
every bad request gets HTTP 400 (404 for an unknown model, version or label; 413 for a body
over the limit) and a JSON `{"error": ...}` naming the offending field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import prometheus_client
import tensorflow as tf
from werkzeug import exceptions as http_exceptions
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from video_reloc.serving.batching import OUTPUT_STEP_AXES, merge_padded, step_input_names
from video_reloc.serving.errors import ServingError
from video_reloc.serving.inputs import check_array, check_batch, check_lengths, check_names
from video_reloc.serving.manager import ModelManager
from video_reloc.serving.metrics import Metrics
from video_reloc.serving.versions import DEFAULT_SIGNATURE, ServedVersion, signature_def_json

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_MS = 30_000
PREDICT_METHOD = "tensorflow/serving/predict"

logger = logging.getLogger(__name__)


# Request parsing and validation.


def _holds_bool(value: Any) -> bool:
    """Whether a JSON array holds `true` or `false` anywhere (numpy reads them as 1 and 0)."""
    return any(v is True or v is False or (isinstance(v, list) and _holds_bool(v)) for v in value)


def _as_array(
    value: Any, field: str, spec: tf.TensorSpec, rank: int, may_hold_bools: bool = True
) -> np.ndarray:
    """Converts one JSON value to an array of `spec`'s dtype and `rank`, or refuses it."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        array = None
    if array is None or array.dtype == object:
        raise ServingError(
            f"{field}: not a rectangular array of numbers (rows of different lengths?)"
        )
    bools = may_hold_bools and array.dtype.kind in "iuf" and isinstance(value, list)
    if bools and _holds_bool(value):
        raise ServingError(
            f"{field}: wrong type; expected numbers ({spec.dtype.name}), got a JSON true or "
            "false among them"
        )
    return check_array(array, field, spec, rank)


def parse_predict_request(
    body: Any,
    specs: Mapping[str, Mapping[str, tf.TensorSpec]],
    may_hold_bools: bool = True,
) -> tuple[str, dict[str, np.ndarray], bool, list[dict[str, int]] | None]:
    """Validates a `:predict` body against the signatures' input specs.

    Args:
        body: The decoded JSON body.
        specs: `{signature_name: {input_name: TensorSpec}}`.
        may_hold_bools: Whether the body may hold a JSON `true` or `false` (when its text has
            neither, arrays are not searched for them).

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
        check_names(value, spec, where)

    if "inputs" in body:
        check_keys(body["inputs"], "inputs")
        inputs = {
            name: _as_array(body["inputs"][name], f"inputs.{name}", s, s.shape.rank, may_hold_bools)
            for name, s in spec.items()
        }
        check_batch(inputs, "inputs")
        check_lengths(inputs, lambda name: f"inputs.{name}")
        return signature_name, inputs, False, None

    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise ServingError("instances: expected a non-empty list of objects")
    rows = []
    for index, instance in enumerate(instances):
        where = f"instances[{index}]"
        check_keys(instance, where)
        row = {
            name: _as_array(instance[name], f"{where}.{name}", s, s.shape.rank - 1, may_hold_bools)[
                None
            ]
            for name, s in spec.items()
        }
        check_lengths(row, lambda name, where=where: f"{where}.{name}")
        rows.append(row)
    steps = [{name: row[name].shape[1] for name in step_input_names(row)} for row in rows]
    return signature_name, merge_padded(rows), True, steps


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


# The WSGI application.


def _json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


class RestApi:
    """The WSGI application of TensorFlow Serving's REST API over loaded models.

    Routes: `GET /v1/models/NAME[/versions/N | /labels/LABEL][/metadata]` and
    `POST /v1/models/NAME[/versions/N | /labels/LABEL]:predict`, and the Prometheus metrics at
    `metrics_path` when given.

    Args:
        models: A `ModelManager`, or `{name: {version: ServedVersion}}` (see `load_models`).
        max_request_bytes: Bodies beyond this get HTTP 413.
        timeout_ms: A request waiting longer than this for the model gets HTTP 503.
        metrics: The server's metrics (a new `Metrics` of the manager when `None`).
        metrics_path: Where to serve the metrics; `None`: nowhere.
    """

    def __init__(
        self,
        models: ModelManager | Mapping[str, Mapping[int, ServedVersion]],
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        metrics: Metrics | None = None,
        metrics_path: str | None = None,
    ):
        self.manager = (
            models if isinstance(models, ModelManager) else ModelManager.of_versions(models)
        )
        self.max_request_bytes = max_request_bytes
        self.timeout_s = timeout_ms / 1000.0
        self.metrics = metrics if metrics is not None else Metrics(self.manager)
        rules = []
        for suffix in ("", "/versions/<version>", "/labels/<label>"):
            prefix = "/v1/models/<name>" + suffix
            rules += [
                Rule(prefix, methods=["GET"], endpoint="status"),
                Rule(prefix + "/metadata", methods=["GET"], endpoint="metadata"),
                Rule(prefix + ":predict", methods=["POST"], endpoint="predict"),
                Rule(prefix + ":<verb>", methods=["POST"], endpoint="verb"),
            ]
        if metrics_path:
            rules.append(Rule(metrics_path, methods=["GET"], endpoint="prometheus"))
        self.url_map = Map(rules)

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

    def _prometheus(self, request: Request) -> Response:
        return Response(
            prometheus_client.generate_latest(self.metrics.registry),
            mimetype=prometheus_client.CONTENT_TYPE_LATEST,
        )

    def _status(
        self, request: Request, name: str, version: str | None = None, label: str | None = None
    ) -> Response:
        with self.metrics.track("get_model_status", "REST", name) as call:
            status = self.manager.status(name, version, label)
            call.version = "" if version is None and label is None else status[0]["version"]
        return _json_response({"model_version_status": status})

    def _metadata(
        self, request: Request, name: str, version: str | None = None, label: str | None = None
    ) -> Response:
        with (
            self.metrics.track("get_model_metadata", "REST", name) as call,
            self.manager.acquire(name, version, label) as served,
        ):
            call.version = str(served.version)
            return _json_response(
                {
                    "model_spec": {
                        "name": name,
                        "signature_name": "",
                        "version": str(served.version),
                    },
                    "metadata": {
                        "signature_def": {
                            "signature_def": {
                                key: signature_def_json(value)
                                for key, value in served.signature_defs.items()
                            }
                        }
                    },
                }
            )

    def _verb(
        self,
        request: Request,
        name: str,
        verb: str,
        version: str | None = None,
        label: str | None = None,
    ):
        with self.manager.acquire(name, version, label):
            raise ServingError(f"verb: ':{verb}' is not supported; use ':predict'")

    def _read_json(self, request: Request) -> tuple[Any, bytes]:
        limit = self.max_request_bytes
        stream = request.environ["wsgi.input"]
        length = request.content_length
        if length is not None and length > limit:
            _drain(stream, length)
            raise ServingError(
                f"body: {length} bytes, over the limit of {limit} bytes", "RESOURCE_EXHAUSTED"
            )
        data = request.stream.read(limit + 1) if length is None else request.get_data()
        if len(data) > limit:
            _drain(request.stream, None)
            raise ServingError(f"body: over the limit of {limit} bytes", "RESOURCE_EXHAUSTED")
        if not data:
            raise ServingError("body: empty; expected a JSON object")
        try:
            return json.loads(data), data
        except (ValueError, RecursionError) as error:
            raise ServingError(f"body: not valid JSON ({error})") from None

    def _predict(
        self, request: Request, name: str, version: str | None = None, label: str | None = None
    ) -> Response:
        with self.metrics.track("predict", "REST", name) as call:
            body, data = self._read_json(request)
            with self.manager.acquire(name, version, label) as served:
                call.version = str(served.version)
                signature_name, inputs, row_format, steps = parse_predict_request(
                    body, served.input_specs, b"true" in data or b"false" in data
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
