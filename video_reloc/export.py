"""SavedModel export with the serving signature (TensorFlow Serving layout BASE/<version>/)."""

from __future__ import annotations

import pathlib

import tensorflow as tf

from video_reloc.decode import MAX_SEGMENT_LENGTH, decode_segments
from video_reloc.model import VideoRelocModel


class RelocalizationModule(tf.Module):
    """A `tf.Module` whose `serve` function is the `serving_default` signature.

    Inputs: `query` `(B, Tq, D)` float32, `query_length` `(B,)` int32, `reference` `(B, Tr, D)`
    float32, `reference_length` `(B,)` int32. Outputs: `start`, `end` `(B,)` int32 (feature
    indices, end exclusive), `score` `(B,)` float32 (log of Eq. 12), `probabilities`
    `(B, Tr, 4)` float32 and `attention` `(B, Tr, Tq)` float32 (forward matching).
    """

    def __init__(
        self, model: VideoRelocModel, feature_dim: int, max_segment_length: int = MAX_SEGMENT_LENGTH
    ):
        super().__init__()
        self.model = model
        self.max_segment_length = max_segment_length
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec((None, None, feature_dim), tf.float32, name="query"),
                tf.TensorSpec((None,), tf.int32, name="query_length"),
                tf.TensorSpec((None, None, feature_dim), tf.float32, name="reference"),
                tf.TensorSpec((None,), tf.int32, name="reference_length"),
            ],
        )

    def _serve(self, query, query_length, reference, reference_length):
        outputs = self.model(
            {
                "query": query,
                "query_length": query_length,
                "reference": reference,
                "reference_length": reference_length,
            },
            training=False,
            return_attention=True,
        )
        log_probabilities = outputs["log_probabilities"]
        start, end, score = decode_segments(
            log_probabilities, reference_length, self.max_segment_length
        )
        return {
            "start": start,
            "end": end,
            "score": score,
            "probabilities": tf.exp(log_probabilities),
            "attention": outputs["attention"],
        }


def next_version(export_base: str | pathlib.Path) -> int:
    """One more than the highest numeric version folder under `export_base` (1 if none)."""
    base = pathlib.Path(export_base)
    versions = [int(p.name) for p in base.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def export_saved_model(
    model: VideoRelocModel,
    export_base: str | pathlib.Path,
    version: int | None = None,
    feature_dim: int | None = None,
) -> pathlib.Path:
    """Writes `model` as a SavedModel under `export_base/<version>/`.

    Args:
        model: A built model.
        export_base: The model's base path (TensorFlow Serving's `--model_base_path`).
        version: The version folder; `None` takes the next free number.
        feature_dim: D; `None` reads it from the encoder's kernel.

    Returns:
        The version folder written.
    """
    if feature_dim is None:
        feature_dim = int(model.encoder.kernel.shape[0])
    version = next_version(export_base) if version is None else int(version)
    path = pathlib.Path(export_base) / str(version)
    if path.exists():
        raise FileExistsError(f"SavedModel version folder {path} already exists.")
    module = RelocalizationModule(model, feature_dim)
    tmp = path.with_name(f".{path.name}.tmp")
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    tmp.rename(path)  # a half-written export never looks like a version
    return path
