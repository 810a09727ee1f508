"""The models of the package by name: `cgbm` (the paper's, the default) and `parallel`.

Both take the inputs `query`, `query_length`, `reference`, `reference_length` and return
`log_probabilities` `(B, Tr, 4)` (and `attention` `(B, Tr, Tq)` on request), so training,
evaluation, export and serving treat them alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import keras

from video_reloc.model import ABLATIONS, VideoRelocModel, build_model
from video_reloc.parallel_model import PARALLEL_ABLATIONS, ParallelRelocModel, build_parallel_model

DEFAULT_ARCHITECTURE = "cgbm"


class Architecture(NamedTuple):
    """A model of the package: its builder, its ablation switches and its class."""

    build: Callable[..., keras.Model]  # a built model from feature_dim and fields
    ablations: dict[str, dict[str, Any]]  # the Table 2 rows' switches
    model_class: type[keras.Model]


ARCHITECTURES = {
    "cgbm": Architecture(build_model, ABLATIONS, VideoRelocModel),
    "parallel": Architecture(build_parallel_model, PARALLEL_ABLATIONS, ParallelRelocModel),
}


def ablations(architecture: str) -> dict[str, dict[str, Any]]:
    """The ablation switches (Table 2 rows) of `architecture`."""
    check_architecture(architecture)
    return ARCHITECTURES[architecture].ablations


def check_architecture(architecture: str) -> None:
    """Raises a one-line `ValueError` naming the choices if `architecture` is unknown."""
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}."
        )


def build_from_config(model_config: Mapping[str, Any], seed: int | None = None) -> keras.Model:
    """A built, untrained model from a model configuration (`model_config.json`).

    Args:
        model_config: `feature_dim`, optionally `architecture` (default `cgbm`), and the
            builder's other arguments (`ablation`, `units`, ...).
        seed: If given, seeds Keras' random generators before the weights are made.

    Returns:
        The model.
    """
    fields = dict(model_config)
    architecture = fields.pop("architecture", DEFAULT_ARCHITECTURE)
    check_architecture(architecture)
    feature_dim = int(fields.pop("feature_dim"))
    return ARCHITECTURES[architecture].build(feature_dim, seed=seed, **fields)


def model_record(model: keras.Model) -> dict[str, Any]:
    """What a model dir's `model_config.json` holds: the model's own configuration.

    Args:
        model: A built model of any architecture.

    Returns:
        `{"architecture", "feature_dim", "model"}`, JSON-ready: `model` is Keras' serialization
        of the model (`get_config()` under `config`, the input shapes under `build_config`),
        without the name, which Keras numbers per process.
    """
    [architecture] = [n for n, a in ARCHITECTURES.items() if type(model) is a.model_class]
    serialized = keras.saving.serialize_keras_object(model)
    serialized.pop("compile_config", None)
    serialized["config"].pop("name", None)
    return {
        "architecture": architecture,
        "feature_dim": model_feature_dim(model),
        "model": json.loads(json.dumps(serialized)),
    }


def build_from_record(record: Mapping[str, Any], seed: int | None = None) -> keras.Model:
    """A built, untrained model from `model_config.json` (see `model_record`).

    A record without `model` (as training wrote it before it stored the model's configuration)
    holds `build_from_config`'s fields and is built by it.

    Args:
        record: The file's contents.
        seed: If given, seeds Keras' random generators before the weights are made.

    Returns:
        The model.
    """
    if "model" not in record:
        return build_from_config(record, seed=seed)
    check_architecture(record.get("architecture", DEFAULT_ARCHITECTURE))
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = keras.saving.deserialize_keras_object(dict(record["model"]))
    if not model.built:
        raise ValueError(
            "model_config.json: the model's build_config (its input shapes) is missing"
        )
    return model


def model_feature_dim(model: keras.Model) -> int:
    """D of a built model of any architecture."""
    feature_dim = getattr(model, "feature_dim", None)
    if feature_dim is not None:
        return int(feature_dim)
    return int(model.encoder.kernel.shape[0])
