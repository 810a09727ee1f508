"""A plain TensorFlow implementation of the model WITHOUT hoisting: the yardstick of issue 2.

Issue 2 states its speed targets against "a plain TF implementation without hoisting" (about
120 training pairs/s and 112 ms per inference pair, 24 ms with XLA, on its 2-core CPU). This is
such an implementation, so that `benchmark_model.py --reference` measures it on the same
machine as `video_reloc` and the targets can be read as ratios. It computes the same function
as `video_reloc.build_model` (the same Eqs. 1-12 and sizes) but the straightforward way: Keras
LSTMs for the encoder and the localizer, and a matching loop that calls its Dense layers and an
`LSTMCell` inside every step, each direction in a loop of its own, re-projecting the whole
query W^q h^q at every reference step. It is not used by the package.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from video_reloc.layers.sequence_ops import reverse_sequence, sequence_mask


class UnhoistedMatching(keras.layers.Layer):
    """The matching, Eqs. (2), (3), (5), (7), with every Dense called inside the loop.

    As in the original release, both directions share the attention, gate and bilinear
    weights and each has its own LSTM cell; each direction runs a loop of its own.
    """

    def __init__(self, units, rank=8, **kwargs):
        super().__init__(**kwargs)
        self.units, self.rank = units, rank

    def build(self, query_shape, reference_shape=None, query_mask_shape=None):
        dim, units = query_shape[-1], self.units
        self.w_q = keras.layers.Dense(units, use_bias=False)
        self.w_r = keras.layers.Dense(units)
        self.w_m = keras.layers.Dense(units, use_bias=False)
        self.w_score = keras.layers.Dense(1)
        self.gate_q = keras.layers.Dense(dim, activation="sigmoid")
        self.gate_r = keras.layers.Dense(dim, activation="sigmoid")
        self.bilinear = keras.layers.Dense(dim * self.rank)
        self.cells = [keras.layers.LSTMCell(units), keras.layers.LSTMCell(units)]
        for layer, in_shape in [
            (self.w_q, (None, None, dim)),
            (self.w_r, (None, dim)),
            (self.w_m, (None, units)),
            (self.w_score, (None, None, units)),
            (self.gate_q, (None, dim)),
            (self.gate_r, (None, dim)),
            (self.bilinear, (None, dim)),
            (self.cells[0], (None, dim)),
            (self.cells[1], (None, dim)),
        ]:
            layer.build(in_shape)

    def call(self, query, reference, query_mask, direction=0):
        batch = tf.shape(reference)[0]
        steps = tf.shape(reference)[1]
        dim = reference.shape[-1]

        def body(i, h, c, outputs):
            reference_i = reference[:, i]
            energy = tf.tanh(self.w_q(query) + (self.w_r(reference_i) + self.w_m(h))[:, None, :])
            scores = tf.squeeze(self.w_score(energy), -1)
            alpha = tf.nn.softmax(tf.where(query_mask, scores, -1e9), axis=-1)
            attended = tf.reduce_sum(alpha[:, :, None] * query, axis=1)
            gated_query = attended * self.gate_r(reference_i)
            gated_reference = reference_i * self.gate_q(attended)
            pq = tf.reshape(self.bilinear(gated_query), (-1, dim, self.rank))
            pr = tf.reshape(self.bilinear(gated_reference), (-1, dim, self.rank))
            matched = tf.reduce_sum(pq * pr, axis=-1)
            h, (h, c) = self.cells[direction](matched, [h, c])
            return i + 1, h, c, outputs.write(i, h)

        zeros = tf.zeros((batch, self.units))
        _, _, _, outputs = tf.while_loop(
            lambda i, *_: i < steps,
            body,
            (0, zeros, zeros, tf.TensorArray(tf.float32, size=steps)),
            maximum_iterations=steps,
        )
        return tf.transpose(outputs.stack(), (1, 0, 2))


class UnhoistedModel(keras.Model):
    """The same function as `VideoRelocModel`, computed without hoisting (see module doc)."""

    def __init__(self, units=128, **kwargs):
        super().__init__(**kwargs)
        self.encoder = keras.layers.LSTM(units, return_sequences=True)
        self.matching = UnhoistedMatching(units)
        self.localizer = keras.layers.LSTM(units, return_sequences=True)
        self.classifier = keras.layers.Dense(4)
        self.dropout_encoder = keras.layers.Dropout(0.4)
        self.dropout_matching = keras.layers.Dropout(0.2)

    def call(self, inputs, training=False):
        query = self.dropout_encoder(self.encoder(inputs["query"]), training=training)
        reference = self.dropout_encoder(self.encoder(inputs["reference"]), training=training)
        query_mask = sequence_mask(inputs["query_length"], tf.shape(query)[1])
        length = inputs["reference_length"]
        forward = self.matching(query, reference, query_mask, direction=0)
        reversed_reference = reverse_sequence(reference, length)
        backward = self.matching(query, reversed_reference, query_mask, direction=1)
        matched = ops.concatenate([forward, reverse_sequence(backward, length)], axis=-1)
        matched = self.dropout_matching(matched, training=training)
        logits = self.classifier(self.localizer(matched))
        return {"log_probabilities": tf.nn.log_softmax(logits, axis=-1)}
