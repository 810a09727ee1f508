"""TensorFlow Serving's gRPC API over the model manager, with `tensorflow-serving-api`'s protos.

- `tensorflow.serving.PredictionService`: `Predict` and `GetModelMetadata` (`Classify`,
  `Regress` and `MultiInference` answer UNIMPLEMENTED: the model takes no `tf.Example`s).
- `tensorflow.serving.ModelService`: `GetModelStatus` (`HandleReloadConfigRequest` answers
  UNIMPLEMENTED).

A `ModelSpec` picks the model by `name` and the version by `version`, `version_label` or
neither (the highest AVAILABLE one), as in TensorFlow Serving. `Predict` takes the signature's
inputs as `TensorProto`s of its dtypes (`tf.make_tensor_proto(array)`), checks them as the REST
API does, and answers with every output (or those of `output_filter`). A bad request gets
INVALID_ARGUMENT naming the field (`inputs['query']: feature dimension is 11, ...`), an unknown
model, version or label NOT_FOUND, a full queue UNAVAILABLE and a model slower than the
deadline DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from video_reloc.serving.errors import ServingError
from video_reloc.serving.inputs import check_array, check_batch, check_lengths, check_names
from video_reloc.serving.manager import ModelManager
from video_reloc.serving.metrics import Metrics
from video_reloc.serving.versions import DEFAULT_SIGNATURE

logger = logging.getLogger(__name__)

_STATES = get_model_status_pb2.ModelVersionStatus.State
_ERROR_CODES = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type


def _model_spec(spec: Any) -> tuple[str, int | None, str | None]:
    """(name, version, label) of a `ModelSpec`; INVALID_ARGUMENT without a name."""
    if not spec.name:
        raise ServingError("model_spec.name: empty; name the model")
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    return spec.name, version, label


def _tensor_inputs(tensors: Any, specs: dict[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    """The request's `inputs` as arrays, checked against the signature's specs."""
    check_names(tensors, specs, "inputs")
    inputs = {}
    for name, spec in specs.items():
        field = f"inputs[{name!r}]"
        tensor = tensors[name]
        if tensor.dtype != spec.dtype.as_datatype_enum:
            given = tf.dtypes.as_dtype(tensor.dtype).name if tensor.dtype else "unset"
            raise ServingError(f"{field}: dtype {given}, the signature expects {spec.dtype.name}")
        try:
            array = tf.make_ndarray(tensor)
        except (ValueError, TypeError) as error:
            raise ServingError(f"{field}: not a valid TensorProto ({error})") from None
        inputs[name] = check_array(array, field, spec, spec.shape.rank)
    check_batch(inputs, "inputs")
    check_lengths(inputs, lambda name: f"inputs[{name!r}]")
    return inputs


class _Servicer:
    """Runs a handler: its ServingError becomes the call's gRPC status, counted in metrics."""

    def __init__(self, manager: ModelManager, metrics: Metrics, timeout_s: float):
        self.manager = manager
        self.metrics = metrics
        self.timeout_s = timeout_s

    def _run(self, api: str, request: Any, context: grpc.ServicerContext, handler: Callable):
        try:
            with self.metrics.track(api, "GRPC", request.model_spec.name) as call:
                return handler(request, context, call)
        except ServingError as error:
            context.abort(grpc.StatusCode[error.code], str(error))
        except Exception as error:  # noqa: BLE001 - a server bug must not kill the server
            logger.exception("Internal error in gRPC %s", api)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {error}")


class PredictionServicer(_Servicer, prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService`: `Predict` and `GetModelMetadata`."""

    def Predict(self, request, context):  # noqa: N802 - the service's method name
        return self._run("predict", request, context, self._predict)

    def GetModelMetadata(self, request, context):  # noqa: N802 - the service's method name
        return self._run("get_model_metadata", request, context, self._metadata)

    def _predict(self, request, context, call) -> predict_pb2.PredictResponse:
        name, version, label = _model_spec(request.model_spec)
        with self.manager.acquire(name, version, label) as served:
            call.version = str(served.version)
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature_name not in served.input_specs:
                raise ServingError(
                    f"model_spec.signature_name: {signature_name!r} is not a signature of the "
                    f"model (available: {sorted(served.input_specs)})"
                )
            inputs = _tensor_inputs(request.inputs, served.input_specs[signature_name])
            outputs_known = served.signature_defs[signature_name].outputs
            unknown = sorted(set(request.output_filter) - set(outputs_known))
            if unknown:
                raise ServingError(
                    f"output_filter: unknown output(s) {unknown}; the signature has "
                    f"{sorted(outputs_known)}"
                )
            timeout_s = self.timeout_s
            remaining = context.time_remaining()
            if remaining is not None:
                timeout_s = min(timeout_s, max(remaining, 0.0))
            outputs = served.predict(signature_name, inputs, timeout_s)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = name
            response.model_spec.version.value = served.version
            response.model_spec.signature_name = signature_name
            wanted = set(request.output_filter) or set(outputs)
            for key, value in outputs.items():
                if key in wanted:
                    response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

    def _metadata(self, request, context, call) -> get_model_metadata_pb2.GetModelMetadataResponse:
        name, version, label = _model_spec(request.model_spec)
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise ServingError(
                f"metadata_field: {fields} is not supported; ask for ['signature_def']"
            )
        with self.manager.acquire(name, version, label) as served:
            call.version = str(served.version)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = name
            response.model_spec.version.value = served.version
            signatures = get_model_metadata_pb2.SignatureDefMap()
            for key, value in served.signature_defs.items():
                signatures.signature_def[key].CopyFrom(value)
            response.metadata["signature_def"].Pack(signatures)
            return response


class ModelServicer(_Servicer, model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService`: `GetModelStatus`."""

    def GetModelStatus(self, request, context):  # noqa: N802 - the service's method name
        return self._run("get_model_status", request, context, self._status)

    def _status(self, request, context, call) -> get_model_status_pb2.GetModelStatusResponse:
        name, version, label = _model_spec(request.model_spec)
        statuses = self.manager.status(name, version, label)
        if version is not None or label is not None:
            call.version = statuses[0]["version"]
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in statuses:
            status = response.model_version_status.add()
            status.version = int(entry["version"])
            status.state = _STATES.Value(entry["state"])
            code = entry["status"]["error_code"]
            status.status.error_code = _ERROR_CODES.values_by_name[code].number
            status.status.error_message = entry["status"]["error_message"]
        return response


def start_grpc_server(
    manager: ModelManager,
    metrics: Metrics,
    host: str,
    port: int,
    timeout_s: float,
    max_threads: int,
    max_message_bytes: int,
) -> tuple[grpc.Server, int]:
    """Starts the gRPC server of both services (port 0 picks a free one).

    Args:
        manager: The models.
        metrics: The server's metrics.
        host: The address to listen on.
        port: The port.
        timeout_s: The longest a request waits for the model (the client's deadline may
            shorten it).
        max_threads: Requests handled at once; more wait their turn.
        max_message_bytes: The largest request accepted (larger ones get RESOURCE_EXHAUSTED).

    Returns:
        The started server and its port.

    Raises:
        OSError: If the address cannot be listened on.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc-api"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not shared
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager, metrics, timeout_s), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(manager, metrics, timeout_s), server
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot listen on {address} for gRPC: {error}") from None
    if not bound:
        raise OSError(f"cannot listen on {address} for gRPC (is the port in use?)")
    server.start()
    return server, bound
