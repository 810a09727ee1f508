"""The video-level baseline of Table 1 (paper Sec. 5.1).

An LSTM encodes a segment into its L2-normalised last hidden state. It is trained with the
triplet loss of FaceNet (Schroff et al., CVPR 2015): the query is the anchor, a window of a
reference of the same class with tIoU > 0.8 to that reference's ground truth is the positive
and a window of the same reference with tIoU < 0.2 is the negative. At test time an exhaustive
search over every window of at most 64 features of the reference picks the window whose
embedding is closest to the query's.

The search is one LSTM pass per start: the encoder is causal, so the hidden state after step
`d` of the pass that starts at `s` is the embedding of the window `[s, s + d + 1)`. All starts
of a batch of references run as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from video_reloc.decode import MAX_SEGMENT_LENGTH
from video_reloc.layers import SequenceLSTM
from video_reloc.metrics import temporal_iou
from video_reloc.padding import stack_padded

POSITIVE_IOU = 0.8
NEGATIVE_IOU = 0.2


def triplet_loss(
    anchor: tf.Tensor, positive: tf.Tensor, negative: tf.Tensor, margin: float = 0.2
) -> tf.Tensor:
    """The triplet loss `mean(max(|a - p|^2 - |a - n|^2 + margin, 0))` of FaceNet.

    Args:
        anchor: `(B, u)` embeddings (L2-normalised).
        positive: `(B, u)` embeddings.
        negative: `(B, u)` embeddings.
        margin: The margin alpha.

    Returns:
        A float32 scalar.
    """
    positive_distance = tf.reduce_sum(tf.square(anchor - positive), axis=-1)
    negative_distance = tf.reduce_sum(tf.square(anchor - negative), axis=-1)
    return tf.reduce_mean(tf.nn.relu(positive_distance - negative_distance + margin))


def all_windows(length: int, max_segment_length: int = MAX_SEGMENT_LENGTH) -> np.ndarray:
    """Every `[s, e)` with `1 <= e - s <= max_segment_length` and `e <= length`.

    Args:
        length: The reference length.
        max_segment_length: The longest window.

    Returns:
        `(M, 2)` int64 windows, shortest first, then by start.
    """
    d = np.arange(1, min(length, max_segment_length) + 1)
    starts = [np.arange(length - k + 1) for k in d]
    start = np.concatenate(starts)
    return np.stack([start, start + np.repeat(d, [len(s) for s in starts])], axis=1)


class VideoLevelBaseline:
    """An LSTM segment embedding trained with a triplet loss, searched exhaustively.

    Args:
        feature_dim: D, the size of a feature vector.
        units: Hidden size of the LSTM (the embedding size).
        margin: Margin of the triplet loss.
        learning_rate: Adam's learning rate.
        batch_size: Triplets per training step.
        max_segment_length: The longest window of the search (64 features, as Eq. 12).
        seed: Seed of the weights and of the triplet sampling.
    """

    def __init__(
        self,
        feature_dim: int,
        units: int = 128,
        margin: float = 0.2,
        learning_rate: float = 1e-3,
        batch_size: int = 64,
        max_segment_length: int = MAX_SEGMENT_LENGTH,
        seed: int = 0,
    ):
        self.feature_dim = feature_dim
        self.units = units
        self.margin = margin
        self.batch_size = batch_size
        self.max_segment_length = max_segment_length
        self.seed = seed
        keras.utils.set_random_seed(seed)
        self.encoder = SequenceLSTM(units, name="video_level_encoder")
        self.encoder.build((None, None, feature_dim))
        self.optimizer = keras.optimizers.Adam(learning_rate, global_clipnorm=5.0)
        self._train_step = tf.function(self._train_step_fn, reduce_retracing=True)
        self._hidden = tf.function(self._hidden_fn, reduce_retracing=True)

    def _hidden_fn(self, features: tf.Tensor) -> tf.Tensor:
        """`(B, T, D)` -> `(B, T, u)` L2-normalised hidden states (prefix embeddings)."""
        return tf.math.l2_normalize(self.encoder(features), axis=-1)

    def _embed_fn(self, features: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """`(B, T, D)`, `(B,)` -> `(B, u)` normalised hidden state after step `lengths - 1`."""
        hidden = self._hidden_fn(features)
        return tf.gather(hidden, tf.maximum(lengths - 1, 0), axis=1, batch_dims=1)

    def _train_step_fn(self, features: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """One Adam step on `(3B, T, D)` rows stacked as anchors, positives, negatives."""
        with tf.GradientTape() as tape:
            anchor, positive, negative = tf.split(self._embed_fn(features, lengths), 3)
            loss = triplet_loss(anchor, positive, negative, self.margin)
        variables = self.encoder.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    def triplet_loss_value(self, features: np.ndarray, lengths: np.ndarray) -> float:
        """The triplet loss of stacked anchors, positives and negatives, without training."""
        anchor, positive, negative = tf.split(
            self._embed_fn(tf.constant(features), tf.constant(lengths)), 3
        )
        return float(triplet_loss(anchor, positive, negative, self.margin))

    def sample_triplets(
        self,
        queries: Sequence[np.ndarray],
        references: Sequence[np.ndarray],
        groundtruth: np.ndarray,
        labels: np.ndarray,
        count: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draws `count` triplets from training examples.

        An anchor is the query of a random example; its positive and negative are windows of
        the reference of another random example of the same class (the same example where the
        class has no other), with tIoU > 0.8 and < 0.2 to that reference's ground truth, drawn
        uniformly among all such windows of at most `max_segment_length` features. When a
        reference has no negative window (the ground truth fills it), the negative is a random
        window of a reference of another class.

        Args:
            queries: N arrays `(Tq_n, D)`.
            references: N arrays `(Tr_n, D)`.
            groundtruth: `(N, 2)` `[start, end)` in the references.
            labels: `(N,)` class of each example.
            count: Triplets to draw.
            rng: The generator of the draws.

        Returns:
            `(features, lengths)`: `(3 count, W, D)` float32 rows (anchors, then positives,
            then negatives) and `(3 count,)` int32 lengths, with `W = max_segment_length`.
        """
        labels = np.asarray(labels)
        by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
        anchors, positives, negatives = [], [], []
        for a in rng.integers(len(queries), size=count):
            same = by_class[labels[a]]
            others = same[same != a]
            b = rng.choice(others) if others.size else a
            windows = all_windows(len(references[b]), self.max_segment_length)
            iou = temporal_iou(windows, np.broadcast_to(groundtruth[b], windows.shape))
            s, e = windows[rng.choice(np.flatnonzero(iou > POSITIVE_IOU))]
            positives.append(references[b][s:e])
            negative_windows = np.flatnonzero(iou < NEGATIVE_IOU)
            if negative_windows.size:
                s, e = windows[rng.choice(negative_windows)]
                negatives.append(references[b][s:e])
            else:
                other = rng.choice(np.flatnonzero(labels != labels[a]))
                windows = all_windows(len(references[other]), self.max_segment_length)
                s, e = windows[rng.integers(len(windows))]
                negatives.append(references[other][s:e])
            anchors.append(queries[a])
        return stack_padded(
            anchors + positives + negatives, self.max_segment_length, self.feature_dim
        )

    def fit(
        self,
        queries: Sequence[np.ndarray],
        references: Sequence[np.ndarray],
        groundtruth: np.ndarray,
        labels: np.ndarray,
        steps: int,
    ) -> list[float]:
        """Trains the encoder for `steps` Adam steps on fresh triplets.

        Args:
            queries: N arrays `(Tq_n, D)` (the training split's queries).
            references: N arrays `(Tr_n, D)`.
            groundtruth: `(N, 2)` `[start, end)` of each query's class in its reference.
            labels: `(N,)` classes.
            steps: Training steps.

        Returns:
            The loss of every step.
        """
        rng = np.random.default_rng(self.seed)
        groundtruth = np.asarray(groundtruth)
        losses = []
        for _ in range(steps):
            features, lengths = self.sample_triplets(
                queries, references, groundtruth, labels, self.batch_size, rng
            )
            losses.append(float(self._train_step(tf.constant(features), tf.constant(lengths))))
        return losses

    def embed(self, segments: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised embeddings of segments of any length.

        Args:
            segments: N arrays `(T_n, D)`.

        Returns:
            `(N, u)` float32.
        """
        features, lengths = stack_padded(segments, max(len(s) for s in segments), self.feature_dim)
        hidden = self._hidden(tf.constant(features)).numpy()
        return hidden[np.arange(len(segments)), lengths - 1]

    def search(
        self, query_embedding: np.ndarray, references: Sequence[np.ndarray], chunk: int = 512
    ) -> tuple[np.ndarray, np.ndarray]:
        """The window of each reference closest to its query embedding.

        Args:
            query_embedding: `(N, u)` embeddings of the queries.
            references: N arrays `(Tr_n, D)`.
            chunk: Starts encoded per LSTM call.

        Returns:
            `(segments, distance)`: `(N, 2)` int32 `[start, end)` and `(N,)` float32 squared
            distance. Ties go to the earliest start, then the shortest window.
        """
        width = self.max_segment_length
        starts = [r[s : s + width] for r in references for s in range(len(r))]
        owner = np.repeat(np.arange(len(references)), [len(r) for r in references])
        distance = np.empty((len(starts), width), np.float32)
        for lo in range(0, len(starts), chunk):
            features, lengths = stack_padded(starts[lo : lo + chunk], width, self.feature_dim)
            hidden = self._hidden(tf.constant(features)).numpy()  # (C, W, u)
            rows = query_embedding[owner[lo : lo + chunk]]
            d = ((hidden - rows[:, None]) ** 2).sum(-1)
            distance[lo : lo + chunk] = np.where(np.arange(width) < lengths[:, None], d, np.inf)
        segments = np.zeros((len(references), 2), np.int32)
        best = np.zeros(len(references), np.float32)
        first = np.concatenate([[0], np.cumsum([len(r) for r in references])])
        for n in range(len(references)):
            table = distance[first[n] : first[n + 1]]  # (Tr_n, W): start, length - 1
            s, d = np.unravel_index(np.argmin(table), table.shape)
            segments[n] = (s, s + d + 1)
            best[n] = table[s, d]
        return segments, best

    def predict(
        self, queries: Sequence[np.ndarray], references: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Predicts the window of each reference closest to its query.

        Args:
            queries: N arrays `(Tq_n, D)`.
            references: N arrays `(Tr_n, D)`.

        Returns:
            `(N, 2)` int32 `[start, end)`.
        """
        return self.search(self.embed(queries), references)[0]
