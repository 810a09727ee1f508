"""Per-reference-step features read from the query-reference similarity map by a small 2-D CNN."""

from __future__ import annotations

import keras
from keras import ops

from video_reloc.layers.initializers import clone_initializer
from video_reloc.layers.masking import masked_max, masked_mean, pair_mask

NUM_STATISTICS = 5  # max_j S, mean_j S, sum_j a S, sum_j a pos, max_j (S - max_i S)


@keras.saving.register_keras_serializable(package="video_reloc")
class SimilarityMapEncoder(keras.layers.Layer):
    """Features of every reference step from its row of the similarity map, class-agnostic.

    Frame-level matching (Chou et al.'s diagonal blocks, DTW) reads the table of distances
    between query and reference steps; ViSiL and MATR learn to read a similarity map with a
    CNN or a soft DTW. This layer reads the map `S (B, Tr, Tq)` of `SimilarityAttention` with a
    small 2-D CNN, all cells at once, over three channels:

    - S itself; S minus its row's max (how close the reference step's best query match is);
    - S minus its column's max over the reference (how close this reference step is to being
      the best match of query step j: mutual nearest neighbours);
    - and the relative query position `(j + 1/2) / Lq - 1/2` (so that a diagonal of
      matches, the query played in order, can be told from a scatter).

    `convolutions` 3 x 3 convolutions of `channels` filters (ReLU) follow; cells outside the
    valid lengths are zeroed before each one. Each reference step then gets its row's max and
    mean of every channel over the valid query steps, and five statistics of its row: max_j S,
    mean_j S, sum_j a_ij S_ij, sum_j a_ij pos_j (where in the query it attends) and
    max_j (S_ij - max_i S_ij). Nothing here depends on what the features mean, only on how
    similar the steps are, so what it learns carries over to unseen classes.

    Args:
        channels: Filters of every convolution.
        convolutions: Number of 3 x 3 convolutions (0: the statistics only).
        kernel_initializer: Initializer of the convolution kernels.
        bias_initializer: Initializer of the convolution biases.
        **kwargs: Base layer arguments.

    Call arguments:
        similarity: `(B, Tr, Tq)` similarity map S.
        attention: `(B, Tr, Tq)` attention a over the query (rows sum to one).
        query_length: `(B,)` int valid query steps.
        reference_length: `(B,)` int valid reference steps.

    Returns:
        `(B, Tr, 2 * channels + 5)` features (`5` with no convolution), zero past the
        reference's valid length.
    """

    def __init__(
        self,
        channels: int = 16,
        convolutions: int = 2,
        kernel_initializer: str | keras.initializers.Initializer = "he_normal",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if channels < 1 or convolutions < 0:
            raise ValueError(
                f"`channels` must be positive and `convolutions` non-negative, got {channels} "
                f"and {convolutions}."
            )
        self.channels = channels
        self.convolutions = convolutions
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    @property
    def output_dim(self) -> int:
        """Features per reference step."""
        return NUM_STATISTICS + (2 * self.channels if self.convolutions else 0)

    def build(self, similarity_shape, *args, **kwargs):
        layers = []
        in_channels = 4
        for n in range(self.convolutions):
            conv = keras.layers.Conv2D(
                self.channels,
                3,
                padding="same",
                activation="relu",
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name=f"conv_{n}",
            )
            conv.build((None, None, None, in_channels))
            layers.append(conv)
            in_channels = self.channels
        # A tuple: tf.train.Checkpoint tracks a Keras layer's tuples of layers, not its lists.
        self.convolution_layers = tuple(layers)
        self.built = True

    def call(self, similarity, attention, query_length, reference_length):
        reference_steps, query_steps = ops.shape(similarity)[1], ops.shape(similarity)[2]
        mask = pair_mask(
            query_length, reference_length, query_steps, reference_steps, similarity.dtype
        )
        similarity, attention = similarity * mask, attention * mask
        length = ops.cast(ops.maximum(query_length, 1), similarity.dtype)[:, None, None]
        position = (ops.cast(ops.arange(query_steps), similarity.dtype)[None, None] + 0.5) / length
        position = (position - 0.5) * mask
        row_relative = (similarity - masked_max(similarity, mask, 2)[:, :, None]) * mask
        column_relative = (similarity - masked_max(similarity, mask, 1)[:, None, :]) * mask
        statistics = [
            masked_max(similarity, mask, 2),
            masked_mean(similarity, mask, 2),
            ops.sum(attention * similarity, axis=2),
            ops.sum(attention * position, axis=2),
            masked_max(column_relative, mask, 2),
        ]
        features = [ops.stack(statistics, axis=-1)]
        if self.convolution_layers:
            maps = ops.stack([similarity, row_relative, column_relative, position], axis=-1)
            cell_mask = mask[..., None]
            for conv in self.convolution_layers:
                maps = conv(maps * cell_mask) * cell_mask
            features += [masked_max(maps, cell_mask, 2), masked_mean(maps, cell_mask, 2)]
        return ops.concatenate(features, axis=-1)

    def compute_output_spec(self, similarity, attention, query_length, reference_length):
        shape = (similarity.shape[0], similarity.shape[1], self.output_dim)
        return keras.KerasTensor(shape, dtype=similarity.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
                "convolutions": self.convolutions,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
