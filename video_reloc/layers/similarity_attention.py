"""Attention of every reference step over the query by cosine similarity, all steps at once."""

from __future__ import annotations

import math

import keras
from keras import ops

from video_reloc.layers.initializers import clone_initializer
from video_reloc.layers.masking import pair_mask

_EPS = 1e-6


def cosine_similarity_map(query, reference):
    """`S[b, i, j] = cos(reference[b, i], query[b, j])`: `(B, Tr, Tq)`.

    Args:
        query: `(B, Tq, d)`.
        reference: `(B, Tr, d)`.
    """
    query = query / ops.sqrt(ops.sum(ops.square(query), axis=-1, keepdims=True) + _EPS)
    reference = reference / ops.sqrt(ops.sum(ops.square(reference), axis=-1, keepdims=True) + _EPS)
    return ops.einsum("bid,bjd->bij", reference, query)


@keras.saving.register_keras_serializable(package="video_reloc")
class SimilarityAttention(keras.layers.Layer):
    """Every reference step attends over the query through their cosine similarity.

    The attention of Eq. (2) without the recurrent matching state, so that all reference steps
    are matched at once: query and reference steps are mapped by one shared projection
    (a Siamese key, `units`), and

        S_ij   = cos(K h^r_i, K h^q_j)
        a_ij   = softmax_j(s * S_ij)           over the valid query steps j
        h-bar^q_i = sum_j a_ij h^q_j

    with a learned scale s (its log is the weight, starting at `log(initial_scale)`). The
    similarity map S is also returned: it is the signal of frame-level matching (DTW's table),
    which a model can read without learning the classes it was trained on.

    Args:
        units: Width of the shared key projection K; `None`: no projection (K = I).
        initial_scale: The softmax scale s at initialization.
        kernel_initializer: Initializer of K.
        **kwargs: Base layer arguments.

    Call arguments:
        query: `(B, Tq, d)` query states h^q.
        reference: `(B, Tr, d)` reference states h^r.
        query_length: `(B,)` int valid query steps (at least one).
        reference_length: Optional `(B,)` int valid reference steps; rows past it are zero.

    Returns:
        `(attended, similarity, attention)`: the attended query h-bar^q `(B, Tr, d)`, the
        similarity map S `(B, Tr, Tq)` and the attention a `(B, Tr, Tq)`, both zero at
        padded query steps (and at padded reference steps when `reference_length` is given).
    """

    def __init__(
        self,
        units: int | None = None,
        initial_scale: float = 10.0,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if initial_scale <= 0:
            raise ValueError(f"`initial_scale` must be positive, got {initial_scale}.")
        self.units = units
        self.initial_scale = initial_scale
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, query_shape, reference_shape=None, *args, **kwargs):
        self.key = None
        if self.units is not None:
            self.key = keras.layers.Dense(
                self.units,
                use_bias=False,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy,
                name="key",
            )
            self.key.build(query_shape)
        self.log_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.initial_scale)),
            name="log_scale",
        )
        self.built = True

    def call(self, query, reference, query_length, reference_length=None):
        keys = (query, reference) if self.key is None else (self.key(query), self.key(reference))
        similarity = cosine_similarity_map(*keys)
        mask = pair_mask(
            query_length,
            reference_length,
            ops.shape(query)[1],
            ops.shape(reference)[1],
            similarity.dtype,
        )
        logits = ops.where(mask > 0, ops.exp(self.log_scale) * similarity, -1e9)
        weights = ops.exp(logits - ops.max(logits, axis=-1, keepdims=True)) * mask
        attention = weights / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), 1e-30)
        attended = ops.einsum("bij,bjd->bid", attention, query)
        return attended, similarity * mask, attention

    def compute_output_spec(self, query, reference, query_length, reference_length=None):
        batch, reference_steps = reference.shape[0], reference.shape[1]
        query_steps = query.shape[1]
        return (
            keras.KerasTensor((batch, reference_steps, query.shape[-1]), dtype=query.dtype),
            keras.KerasTensor((batch, reference_steps, query_steps), dtype=query.dtype),
            keras.KerasTensor((batch, reference_steps, query_steps), dtype=query.dtype),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "initial_scale": self.initial_scale,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
