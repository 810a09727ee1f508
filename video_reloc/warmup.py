"""SavedModel warm-up requests, in TensorFlow Serving's format.

TensorFlow Serving warms a SavedModel up when it loads it (`--enable_model_warmup`, on by
default): it runs the requests recorded in `<version>/assets.extra/tf_serving_warmup_requests`,
a TFRecord file of `tensorflow.serving.PredictionLog` protos (at most 1,000), before it reports
the version AVAILABLE. With XLA the exported signature compiles once per bucketed input shape
(see `video_reloc.export`), a few seconds each, so without a warm-up the first request of every
bucket pays that compile. `video_reloc.export` writes the file and `video_reloc.serving` replays
it, as TensorFlow Serving does.

The records are TensorFlow Serving's own `PredictionLog` protos (`tensorflow-serving-api`'s
`prediction_log_pb2`), each holding a `PredictLog` whose `PredictRequest` names the signature.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from google.protobuf import message
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import prediction_log_pb2

WARMUP_REQUESTS_PATH = "assets.extra/tf_serving_warmup_requests"
"""The warm-up file, relative to the SavedModel folder (TensorFlow Serving's path)."""
MAX_WARMUP_REQUESTS = 1000
"""TensorFlow Serving refuses a warm-up file with more records than this."""
DEFAULT_SIGNATURE = "serving_default"


class WarmupShape(NamedTuple):
    """The input shape of one warm-up request: batch rows, query steps, reference steps."""

    batch: int
    query_steps: int
    reference_steps: int

    @classmethod
    def parse(cls, text: str) -> WarmupShape:
        """Reads `QUERYxREFERENCE` (batch 1) or `BATCHxQUERYxREFERENCE`, e.g. `32x300`."""
        parts = re.split(r"\s*[x:]\s*", text.strip().lower())
        if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(
                f"warm-up shape {text!r}: expected QUERYxREFERENCE or BATCHxQUERYxREFERENCE "
                "with positive integers, e.g. 32x300 or 4x32x300"
            )
        numbers = [int(p) for p in parts]
        return cls(*([1] * (3 - len(numbers)) + numbers))

    def __str__(self) -> str:
        return f"batch {self.batch}, query {self.query_steps}, reference {self.reference_steps}"


@dataclasses.dataclass(frozen=True)
class WarmupRequest:
    """One warm-up request: a signature and its input arrays."""

    signature_name: str
    inputs: dict[str, np.ndarray]

    def describe(self) -> str:
        """`batch B, query Tq, reference Tr` for the model's inputs, else the input shapes."""
        shapes = {name: array.shape for name, array in self.inputs.items()}
        if all(len(shapes.get(n, ())) >= 2 for n in ("query", "reference")):
            return str(WarmupShape(shapes["query"][0], shapes["query"][1], shapes["reference"][1]))
        return ", ".join(f"{name} {list(shape)}" for name, shape in sorted(shapes.items()))


def make_request(
    shape: WarmupShape, feature_dim: int, signature_name: str = DEFAULT_SIGNATURE
) -> WarmupRequest:
    """A request of the serving signature at `shape`: zero features, every step valid."""
    batch, query_steps, reference_steps = shape
    return WarmupRequest(
        signature_name,
        {
            "query": np.zeros((batch, query_steps, feature_dim), np.float32),
            "query_length": np.full((batch,), query_steps, np.int32),
            "reference": np.zeros((batch, reference_steps, feature_dim), np.float32),
            "reference_length": np.full((batch,), reference_steps, np.int32),
        },
    )


_VALUE_FIELDS = {
    np.dtype(np.float32): ("float_val", types_pb2.DT_FLOAT),
    np.dtype(np.float64): ("double_val", types_pb2.DT_DOUBLE),
    np.dtype(np.int32): ("int_val", types_pb2.DT_INT32),
    np.dtype(np.int64): ("int64_val", types_pb2.DT_INT64),
}


def _tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """`array` as a TensorProto; a constant array as one value (TensorFlow repeats the last)."""
    array = np.asarray(array)
    known = _VALUE_FIELDS.get(array.dtype)
    if known is None or array.size == 0 or not np.all(array == array.flat[0]):
        return tf.make_tensor_proto(array)
    field, dtype = known
    proto = tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
        ),
    )
    getattr(proto, field).append(array.flat[0].item())
    return proto


def warmup_requests_path(saved_model_dir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(saved_model_dir) / WARMUP_REQUESTS_PATH


def write_warmup_requests(
    saved_model_dir: str | pathlib.Path, requests: Sequence[WarmupRequest]
) -> pathlib.Path:
    """Writes `requests` as the SavedModel's `assets.extra/tf_serving_warmup_requests`.

    Returns:
        The file written.

    Raises:
        ValueError: With no request or more than TensorFlow Serving's 1,000.
    """
    if not requests or len(requests) > MAX_WARMUP_REQUESTS:
        raise ValueError(
            f"{len(requests)} warm-up requests; TensorFlow Serving reads 1 to {MAX_WARMUP_REQUESTS}"
        )
    path = warmup_requests_path(saved_model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.model_spec.signature_name = request.signature_name
            for name, array in request.inputs.items():
                log.predict_log.request.inputs[name].CopyFrom(_tensor_proto(array))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(saved_model_dir: str | pathlib.Path) -> list[WarmupRequest] | None:
    """The SavedModel's warm-up requests; `None` when it has no warm-up file.

    Raises:
        ValueError: For a record that is not a predict log, or more than 1,000 records.
    """
    path = warmup_requests_path(saved_model_dir)
    if not path.exists():
        return None
    requests = []
    for index, record in enumerate(_records(path)):
        if index >= MAX_WARMUP_REQUESTS:
            raise ValueError(f"{path}: more than {MAX_WARMUP_REQUESTS} warm-up records")
        try:
            log = prediction_log_pb2.PredictionLog.FromString(record)
        except message.DecodeError as error:
            raise ValueError(f"{path}: record {index} is not a PredictionLog ({error})") from None
        if not log.HasField("predict_log"):
            raise ValueError(
                f"{path}: record {index} is not a predict log (only PredictLog warm-up records "
                "are supported)"
            )
        request = log.predict_log.request
        requests.append(
            WarmupRequest(
                request.model_spec.signature_name or DEFAULT_SIGNATURE,
                {name: tf.make_ndarray(value) for name, value in request.inputs.items()},
            )
        )
    return requests


def _records(path: pathlib.Path) -> Iterable[bytes]:
    for record in tf.data.TFRecordDataset(str(path)):
        yield record.numpy()


def requests_for_shapes(
    shapes: Iterable[WarmupShape],
    input_specs: Mapping[str, tf.TensorSpec],
    signature_name: str = DEFAULT_SIGNATURE,
) -> list[WarmupRequest]:
    """Requests of the serving signature at `shapes`, D read from `input_specs`.

    Raises:
        ValueError: If the signature does not take `query` with a static feature dimension.
    """
    spec = input_specs.get("query")
    feature_dim = None if spec is None or spec.shape.rank != 3 else spec.shape[-1]
    if feature_dim is None:
        raise ValueError(
            f"signature {signature_name!r} has no input 'query' (B, T, D) with a known D; "
            "cannot make warm-up requests from shapes"
        )
    return [make_request(shape, int(feature_dim), signature_name) for shape in shapes]


__all__ = [
    "MAX_WARMUP_REQUESTS",
    "WARMUP_REQUESTS_PATH",
    "WarmupRequest",
    "WarmupShape",
    "make_request",
    "read_warmup_requests",
    "requests_for_shapes",
    "warmup_requests_path",
    "write_warmup_requests",
]
