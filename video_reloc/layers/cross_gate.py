"""Cross gating of the attended query and the reference step, Eq. (3)."""

from __future__ import annotations

import keras
from keras import ops

from video_reloc.layers.initializers import clone_initializer


@keras.saving.register_keras_serializable(package="video_reloc")
class CrossGate(keras.layers.Layer):
    """Cross gating, Eq. (3) of Feng et al. (ECCV 2018).

    Each input is gated by a sigmoid of the other one:

        g^r = sigmoid(W^g_r h^r + b^g_r),   h~^q = h-bar^q * g^r
        g^q = sigmoid(W^g_q h-bar^q + b^g_q),   h~^r = h^r * g^q

    The weights are `W_g_r`, `b_g_r`, `W_g_q` and `b_g_q`. The gate computed from the reference,
    `query_gate(reference)`, depends only on the reference step, so a caller that loops over
    reference steps can compute it for all steps at once before the loop and pass it in
    through `call(..., query_gate=...)`.

    Args:
        kernel_initializer: Initializer of both gate kernels.
        bias_initializer: Initializer of both gate biases.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: A pair `(query, reference)`: the attended query h-bar^q of shape `(..., lq)` and
            the reference step h^r of shape `(..., lr)`, with the same leading dimensions.
        query_gate: Optional precomputed `query_gate(reference)`, shape `(..., lq)`.

    Returns:
        The pair `(gated_query, gated_reference)`, h~^q and h~^r, shapes `(..., lq)` and
        `(..., lr)`.
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

        def weight(shape, initializer, name):
            return self.add_weight(
                shape=shape, initializer=clone_initializer(initializer), name=name
            )

        # W^g_r, b^g_r: the gate g^r of the query, computed from the reference.
        self.W_g_r = weight((reference_dim, query_dim), self.kernel_initializer, "W_g_r")
        self.b_g_r = weight((query_dim,), self.bias_initializer, "b_g_r")
        # W^g_q, b^g_q: the gate g^q of the reference, computed from the query.
        self.W_g_q = weight((query_dim, reference_dim), self.kernel_initializer, "W_g_q")
        self.b_g_q = weight((reference_dim,), self.bias_initializer, "b_g_q")
        self.built = True

    def query_gate(self, reference):
        """g^r of Eq. (3): the gate for the query, shape `(..., lq)`, from `(..., lr)`."""
        return ops.sigmoid(ops.matmul(reference, self.W_g_r) + self.b_g_r)

    def reference_gate(self, query):
        """g^q of Eq. (3): the gate for the reference, shape `(..., lr)`, from `(..., lq)`."""
        return ops.sigmoid(ops.matmul(query, self.W_g_q) + self.b_g_q)

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
