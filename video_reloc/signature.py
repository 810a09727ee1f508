"""The serving signature's contract: its name and its inputs.

The exported SavedModel (`video_reloc.export`), the server (`video_reloc.serving`), TensorFlow
Serving's warm-up records (`video_reloc.warmup`), the evaluation and the relocalizer all speak
of the same signature; its name and input specs live here.
"""

from __future__ import annotations

import tensorflow as tf

SIGNATURE_NAME = "serving_default"
"""The signature TensorFlow Serving calls when a request names none."""


def input_signature(feature_dim: int) -> dict[str, tf.TensorSpec]:
    """The model's inputs with free batch and time dimensions, in the signature's order.

    Args:
        feature_dim: D, the size of one feature vector.

    Returns:
        `query` `(B, Tq, D)` float32, `query_length` `(B,)` int32, `reference` `(B, Tr, D)`
        float32 and `reference_length` `(B,)` int32, each named as its key.
    """
    return {
        "query": tf.TensorSpec((None, None, feature_dim), tf.float32, name="query"),
        "query_length": tf.TensorSpec((None,), tf.int32, name="query_length"),
        "reference": tf.TensorSpec((None, None, feature_dim), tf.float32, name="reference"),
        "reference_length": tf.TensorSpec((None,), tf.int32, name="reference_length"),
    }
