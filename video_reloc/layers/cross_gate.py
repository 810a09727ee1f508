"""Cross gating of the attended query and the reference step, Eq. (3)."""

from __future__ import annotations

import keras
from keras import ops

from video_reloc.layers.initializers import clone_initializer


def gate(inputs, kernel, bias):
    """sigmoid(W x + b) of Eq. (3), with explicit weights. `(..., d_in)` to `(..., d_out)`."""
    return ops.sigmoid(ops.matmul(inputs, kernel) + bias)


@keras.saving.register_keras_serializable(package="video_reloc")
class CrossGate(keras.layers.Layer):
    """Cross gating, Eq. (3) of Feng et al. (ECCV 2018).

    Each input is gated by a sigmoid of the other one:

        g^r = sigmoid(W^g_r h^r + b^g_r),   h~^q = h-bar^q * g^r
        g^q = sigmoid(W^g_q h-bar^q + b^g_q),   h~^r = h^r * g^q

    The gate computed from the reference, `query_gate(reference)`, depends only on the reference
    step, so a caller that loops over reference steps can compute it for all steps at once before
    the loop and pass it in through `call(..., query_gate=...)`.

    Args:
        kernel_initializer: Initializer of both gate kernels.
        bias_initializer: Initializer of both gate biases.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: A pair `(query, reference)`: the attended query h-bar^q of shape `(..., lq)` and
            the reference step h^r of shape `(..., lr)`, with the same leading dimensions.
        query_gate: Optional precomputed `query_gate(reference)`, shape `(..., lq)`.

    Returns:
        The pair `(gated_query, gated_reference)`, shapes `(..., lq)` and `(..., lr)`.
    """

    def __init__(
        self,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        query_shape, reference_shape = input_shape
        query_dim, reference_dim = query_shape[-1], reference_shape[-1]
        # W^g_r, b^g_r: gate applied to the query, computed from the reference.
        self.reference_to_query_dense = keras.layers.Dense(
            query_dim,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="reference_to_query",
        )
        self.reference_to_query_dense.build(reference_shape)
        # W^g_q, b^g_q: gate applied to the reference, computed from the query.
        self.query_to_reference_dense = keras.layers.Dense(
            reference_dim,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="query_to_reference",
        )
        self.query_to_reference_dense.build(query_shape)
        self.built = True

    def query_gate(self, reference):
        """g^r of Eq. (3): the gate for the query, shape `(..., lq)`, from `(..., lr)`."""
        dense = self.reference_to_query_dense
        return gate(reference, dense.kernel, dense.bias)

    def reference_gate(self, query):
        """g^q of Eq. (3): the gate for the reference, shape `(..., lr)`, from `(..., lq)`."""
        dense = self.query_to_reference_dense
        return gate(query, dense.kernel, dense.bias)

    def call(self, inputs, query_gate=None):
        query, reference = inputs
        if query_gate is None:
            query_gate = self.query_gate(reference)
        gated_query = ops.multiply(query, query_gate)
        gated_reference = ops.multiply(reference, self.reference_gate(query))
        return gated_query, gated_reference

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0]), tuple(input_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
