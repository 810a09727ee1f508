"""Validation of a predict request's input arrays, shared by the REST and gRPC APIs.

Each check raises a `ServingError` (INVALID_ARGUMENT) whose message starts with the field at
fault, in the API's own spelling (`instances[0].query`, `inputs.reference`,
`inputs['query_length']`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from video_reloc.serving.batching import LENGTH_SUFFIX, step_input_names
from video_reloc.serving.errors import ServingError


def shape_text(spec: tf.TensorSpec, rank: int) -> str:
    """The last `rank` dimensions of `spec`, `?` for unknown ones: `(?, ?, 500)`."""
    dims = spec.shape.as_list()[-rank:] if rank else []
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def check_array(array: np.ndarray, field: str, spec: tf.TensorSpec, rank: int) -> np.ndarray:
    """Checks a numeric array against `spec` (its last `rank` dimensions) and casts it.

    Args:
        array: Numbers (integer or floating; other kinds are refused).
        field: The field's name in messages.
        spec: The signature's input spec.
        rank: The rank expected (the spec's, or one less for one row of the row format).

    Returns:
        The array in `spec`'s dtype.

    Raises:
        ServingError: For an empty array, a wrong type or rank, NaN or infinite values, values
            beyond the dtype, or a static dimension that differs.
    """
    if array.size == 0:
        raise ServingError(f"{field}: empty (shape {list(array.shape)}); needs at least one step")
    if array.dtype.kind not in "iuf":
        raise ServingError(
            f"{field}: wrong type; expected numbers ({spec.dtype.name}), got {array.dtype.kind!r} "
            f"values such as {array.flat[0]!r}"
        )
    if array.ndim != rank:
        raise ServingError(
            f"{field}: expected {rank} dimension(s) {shape_text(spec, rank)}, got shape "
            f"{list(array.shape)}"
        )
    if spec.dtype.is_floating:
        with np.errstate(over="ignore", invalid="ignore"):
            array = array.astype(spec.dtype.as_numpy_dtype, copy=False)
        if not np.all(np.isfinite(array)):
            raise ServingError(f"{field}: NaN or infinite values (or beyond {spec.dtype.name})")
    else:
        if array.dtype.kind == "f":
            raise ServingError(f"{field}: wrong type; expected integers ({spec.dtype.name})")
        info = np.iinfo(spec.dtype.as_numpy_dtype)
        if array.min() < info.min or array.max() > info.max:
            raise ServingError(f"{field}: values beyond {spec.dtype.name}")
        array = array.astype(spec.dtype.as_numpy_dtype, copy=False)
    # Static dimensions of the signature (the feature dimension D).
    static = spec.shape.as_list()[-rank:] if rank else []
    for axis, (size, expected) in enumerate(zip(array.shape, static)):
        if expected is not None and size != expected:
            what = "feature dimension" if axis == rank - 1 else f"dimension {axis}"
            raise ServingError(
                f"{field}: {what} is {size}, the model expects {expected} {shape_text(spec, rank)}"
            )
    return array


def check_lengths(inputs: Mapping[str, np.ndarray], field: Callable[[str], str]) -> None:
    """Each `x_length` must be within 1 and the steps of `x`.

    Args:
        inputs: A batch (axis 0) of inputs.
        field: The name of an input in messages.

    Raises:
        ServingError: Naming the first length outside, with its index.
    """
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


def check_names(names: Mapping | set, spec: Mapping[str, tf.TensorSpec], where: str) -> None:
    """The inputs given must be exactly the signature's.

    Raises:
        ServingError: Naming the missing or unknown inputs.
    """
    missing = sorted(set(spec) - set(names))
    if missing:
        raise ServingError(f"{where}: missing input(s) {missing}")
    extra = sorted(set(names) - set(spec))
    if extra:
        raise ServingError(f"{where}: unknown input(s) {extra}; expected {sorted(spec)}")


def check_batch(inputs: Mapping[str, np.ndarray], where: str) -> None:
    """All inputs must have the same batch (axis 0) size.

    Raises:
        ServingError: Listing each input's batch size.
    """
    batch_sizes = {name: array.shape[0] for name, array in inputs.items()}
    if len(set(batch_sizes.values())) > 1:
        raise ServingError(f"{where}: batch sizes differ: {batch_sizes}")
