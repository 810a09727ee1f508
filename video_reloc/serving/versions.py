"""One loaded version of a model: its SavedModel, signatures, batchers and warm-up.

Also the version folders found under a base path (`find_versions`) and what the server reads
from `saved_model.pb` without loading it (signature defs, whether XLA compiles it).
"""

from __future__ import annotations

import concurrent.futures
import logging
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from video_reloc import warmup
from video_reloc.export import default_warmup_shapes
from video_reloc.serving.batching import Batcher
from video_reloc.serving.config import BatchingParameters
from video_reloc.serving.errors import ServingError
from video_reloc.warmup import WarmupRequest, WarmupShape

DEFAULT_SIGNATURE = "serving_default"

logger = logging.getLogger(__name__)


class LoadCancelledError(RuntimeError):
    """A version's load abandoned because the server is stopping."""


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
    """The SavedModel's signature defs (`SignatureDef` protos), without internal ones."""
    meta_graph = saved_model.meta_graphs[0]
    return {
        name: signature
        for name, signature in meta_graph.signature_def.items()
        if not name.startswith("__")
    }


def signature_def_json(signature: Any) -> dict[str, Any]:
    """A `SignatureDef` as TensorFlow Serving's REST metadata shows it."""
    return json_format.MessageToDict(
        signature, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class ServedVersion:
    """One loaded version of a model: its signatures, their input specs and its batcher.

    Args:
        name: The model's name.
        version: The version number.
        path: The version folder.
        batching: Batching parameters; `None` runs requests one by one in arrival order.
        on_batch: Called with (name, version, rows) for each batch run.

    Attributes:
        signature_defs: `{signature name: SignatureDef proto}` of the SavedModel.
    """

    def __init__(
        self,
        name: str,
        version: int,
        path: str | pathlib.Path,
        batching: BatchingParameters | None,
        on_batch: Callable[[str, int, int], None] | None = None,
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
        observe = None if on_batch is None else (lambda rows: on_batch(name, version, rows))
        self._batchers = {
            key: Batcher(self._runner(key), parameters, f"{name}-{version}-{key}", observe)
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
            raise ServingError(
                f"the model did not answer within {timeout_s:g} s", "DEADLINE_EXCEEDED"
            ) from None
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
