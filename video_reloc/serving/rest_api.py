"""TensorFlow Serving's REST API as a WSGI application (`RestApi`).

The `:predict` body is validated against the signature's input specs (`parse_predict_request`):
every bad request gets HTTP 400 (404 for an unknown model or version) and a JSON
`{"error": ...}` naming the offending field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from werkzeug import exceptions as http_exceptions
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from video_reloc.serving.batching import (
    LENGTH_SUFFIX,
    OUTPUT_STEP_AXES,
    merge_padded,
    step_input_names,
)
from video_reloc.serving.errors import ServingError
from video_reloc.serving.manager import ModelManager
from video_reloc.serving.versions import DEFAULT_SIGNATURE, ServedVersion

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_MS = 30_000
PREDICT_METHOD = "tensorflow/serving/predict"

logger = logging.getLogger(__name__)


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
    for name in step_input_names(inputs):
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
