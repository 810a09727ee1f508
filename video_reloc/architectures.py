"""The models of the package by name: `cgbm` (the paper's, the default) and `parallel`.

Both take the inputs `query`, `query_length`, `reference`, `reference_length` and return
`log_probabilities` `(B, Tr, 4)` (and `attention` `(B, Tr, Tq)` on request), so training,
evaluation, export and serving treat them alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from video_reloc.model import ABLATIONS, build_model
from video_reloc.parallel_model import PARALLEL_ABLATIONS, build_parallel_model

DEFAULT_ARCHITECTURE = "cgbm"
# Name -> (builder of a built model from feature_dim and fields, the ablation switches).
ARCHITECTURES = {
    "cgbm": (build_model, ABLATIONS),
    "parallel": (build_parallel_model, PARALLEL_ABLATIONS),
}


def ablations(architecture: str) -> dict[str, dict[str, Any]]:
    """The ablation switches (Table 2 rows) of `architecture`."""
    check_architecture(architecture)
    return ARCHITECTURES[architecture][1]


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
    return ARCHITECTURES[architecture][0](feature_dim, seed=seed, **fields)


def model_feature_dim(model: keras.Model) -> int:
    """D of a built model of any architecture."""
    feature_dim = getattr(model, "feature_dim", None)
    if feature_dim is not None:
        return int(feature_dim)
    return int(model.encoder.kernel.shape[0])
