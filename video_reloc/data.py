"""Input pipeline: the TFDS splits in memory, training pairs, crops, buckets and padding.

Training pairs are drawn as the original release (`fengyang0317/video_reloc`,
`input_functions.py`) draws them: every epoch visits the train examples in a random order;
example i gives the query (its ground-truth segment) and a reference is drawn uniformly from
the train examples of the same class whose reference window is at least as long as the query
(i itself included). With probability 0.9 the reference's context is cropped: `off_st ~
U{0..g0}` rows are cut before and `off_en ~ U{0..T - g1}` after, and the ground truth moves by
`-off_st`. Pairs are grouped by reference length // 30 (`group_by_window` with a window of one
batch, over the endless stream) into padded batches.

Everything random comes from one `numpy.random.Generator` seeded with the training seed, so a
stream of batches is a pure function of (data, seed, batch size): a resumed run regenerates the
stream and skips the batches it already trained on, without reading their features.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from video_reloc.padding import stack_padded

BUCKET_SPAN = 30  # reference lengths per bucket (`--bucket_span` of the original release)
QUERY_MULTIPLE = 8  # queries are padded to a multiple of this, references to a bucket's end
CROP_PROBABILITY = 0.9  # probability of cropping a training reference's context
MAX_REFERENCE_LENGTH = 300  # the longest reference window of the dataset
DEFAULT_DATASET = "activitynet_reloc/synthetic"


@dataclasses.dataclass
class Examples:
    """One split of the dataset, in memory.

    Attributes:
        query: N arrays `(Tq_i, D)` float32, the query segments.
        reference: N arrays `(Tr_i, D)` float32, the reference windows.
        groundtruth: `(N, 2)` int32 [start, end) of the matching segment in each reference.
        label: `(N,)` int64 class of each example.
        query_id: N video ids of the queries.
        reference_id: N video ids of the references.
        query_location: `(N, 2)` int32 [start, end) of each query in its whole video.
        reference_location: `(N, 2)` int32 [start, end) of each reference window in its video.
        reference_seconds_per_feature: `(N,)` float32 seconds covered by one reference row.
        query_seconds_per_feature: `(N,)` float32 seconds covered by one query row.
    """

    query: list[np.ndarray]
    reference: list[np.ndarray]
    groundtruth: np.ndarray
    label: np.ndarray
    query_id: list[str] = dataclasses.field(default_factory=list)
    reference_id: list[str] = dataclasses.field(default_factory=list)
    query_location: np.ndarray | None = None
    reference_location: np.ndarray | None = None
    reference_seconds_per_feature: np.ndarray | None = None
    query_seconds_per_feature: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.query)

    @property
    def feature_dim(self) -> int:
        """D, the size of one feature row."""
        return int(self.reference[0].shape[-1])

    @property
    def query_lengths(self) -> np.ndarray:
        """`(N,)` int32 query lengths."""
        return np.array([len(q) for q in self.query], np.int32)

    @property
    def reference_lengths(self) -> np.ndarray:
        """`(N,)` int32 reference lengths."""
        return np.array([len(r) for r in self.reference], np.int32)

    def subset(self, indices: np.ndarray | list[int]) -> Examples:
        """The examples at `indices`, in that order."""
        indices = [int(i) for i in indices]

        def pick(array):
            return None if array is None else np.asarray(array)[indices]

        return Examples(
            query=[self.query[i] for i in indices],
            reference=[self.reference[i] for i in indices],
            groundtruth=self.groundtruth[indices],
            label=self.label[indices],
            query_id=[self.query_id[i] for i in indices] if self.query_id else [],
            reference_id=[self.reference_id[i] for i in indices] if self.reference_id else [],
            query_location=pick(self.query_location),
            reference_location=pick(self.reference_location),
            reference_seconds_per_feature=pick(self.reference_seconds_per_feature),
            query_seconds_per_feature=pick(self.query_seconds_per_feature),
        )


class DatasetError(ValueError):
    """A dataset that cannot be found, built or read; one line naming the file, video or field."""


def dataset_builder(
    dataset: str = DEFAULT_DATASET,
    data_dir: str | pathlib.Path | None = None,
    manual_dir: str | pathlib.Path | None = None,
    prepare: bool = True,
):
    """The TFDS builder of `dataset`, built first when it is not yet (one command from raw files).

    Args:
        dataset: `activitynet_reloc/CONFIG[:VERSION]`, e.g. `activitynet_reloc/synthetic`.
        data_dir: The TFDS data dir (`None`: TFDS's default, `~/tensorflow_datasets`).
        manual_dir: Where the manual files of config `c3d` or `custom` are; handed to the
            builder when the dataset is not built yet. A `custom` dataset built from other
            files than these is refused.
        prepare: Whether to build the dataset when it is not built yet.

    Returns:
        A `tfds.core.DatasetBuilder`.

    Raises:
        DatasetError: One line naming the dataset and the file, video or field at fault: an
            unknown dataset or config, missing or bad manual files (the builder checks them
            all before it writes anything), a `custom` dataset built from other files.
    """
    import tensorflow_datasets as tfds

    # Registers activitynet_reloc with TFDS.
    from tfds_activitynet_reloc.activitynet_reloc import activitynet_reloc_dataset_builder as anr

    try:
        builder = tfds.builder(dataset, data_dir=None if data_dir is None else str(data_dir))
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
        raise DatasetError(f"--dataset={dataset}: {_first_line(e)}") from e
    if builder.is_prepared() and manual_dir is not None:
        built_from = (builder.info.metadata or {}).get("manual_fingerprint")
        if built_from is not None and built_from != anr.manual_fingerprint(manual_dir):
            raise DatasetError(
                f"{dataset} in {builder.data_dir} was built from other files than those in "
                f"{manual_dir}; pass another --data_dir (or delete that folder) to build them"
            )
    if prepare and not builder.is_prepared():
        config = tfds.download.DownloadConfig(
            manual_dir=None if manual_dir is None else str(manual_dir)
        )
        try:
            builder.download_and_prepare(download_config=config)
        except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
            # The builder's own errors name the file and video; TFDS's name the manual dir.
            raise DatasetError(f"{dataset}: {_first_line(e)}") from e
    return builder


def _first_line(error: BaseException) -> str:
    """An exception's message on one line (KeyError's without its quotes), without a closing
    sentence that introduces the lines after it ("... using instructions:")."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    line = (text.strip().splitlines() or [type(error).__name__])[0]
    if line.endswith(":") and ". " in line:
        line = line.rsplit(". ", 1)[0] + "."
    return line


def feature_spec(builder) -> dict | None:
    """How the dataset's features were made (`video_reloc.features.FeatureSpec` as JSON), when
    the dataset records it (config `custom` on features of `video-reloc-features`)."""
    metadata = builder.info.metadata or {}
    return dict(metadata["features"]) if "features" in metadata else None


def load_split(
    split: str,
    dataset: str = DEFAULT_DATASET,
    data_dir: str | pathlib.Path | None = None,
    manual_dir: str | pathlib.Path | None = None,
    builder=None,
) -> Examples:
    """Reads one split of the TFDS dataset into memory (building the dataset if needed).

    Args:
        split: `train`, `validation` or `test` (any TFDS split string).
        dataset: `activitynet_reloc/CONFIG`.
        data_dir: The TFDS data dir.
        manual_dir: Manual files of config `c3d`, used when the dataset is not built yet.
        builder: A builder to read from instead of making one from the arguments above.

    Returns:
        The split's `Examples`, in the dataset's order.
    """
    import tensorflow_datasets as tfds

    if builder is None:
        builder = dataset_builder(dataset, data_dir, manual_dir)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    rows: dict[str, list] = {
        key: []
        for key in (
            "query",
            "reference",
            "groundtruth",
            "label",
            "query_id",
            "reference_id",
            "query_location",
            "reference_location",
            "reference_seconds_per_feature",
            "query_seconds_per_feature",
        )
    }
    for ex in tfds.as_numpy(ds):
        for key, values in rows.items():
            value = ex[key]
            values.append(value.decode() if isinstance(value, bytes) else value)
    if not rows["query"]:
        raise ValueError(f"Split {split!r} of {builder.info.full_name} is empty.")
    return Examples(
        query=[np.asarray(q, np.float32) for q in rows["query"]],
        reference=[np.asarray(r, np.float32) for r in rows["reference"]],
        groundtruth=np.asarray(rows["groundtruth"], np.int32).reshape(-1, 2),
        label=np.asarray(rows["label"], np.int64),
        query_id=rows["query_id"],
        reference_id=rows["reference_id"],
        query_location=np.asarray(rows["query_location"], np.int32).reshape(-1, 2),
        reference_location=np.asarray(rows["reference_location"], np.int32).reshape(-1, 2),
        reference_seconds_per_feature=np.asarray(rows["reference_seconds_per_feature"], np.float32),
        query_seconds_per_feature=np.asarray(rows["query_seconds_per_feature"], np.float32),
    )


@dataclasses.dataclass
class Pairs:
    """Training pairs as indices into the train `Examples`.

    Attributes:
        query: `(P,)` index of each pair's query example.
        reference: `(P,)` index of each pair's reference example.
        window: `(P, 2)` [start, end) of the (cropped) reference window in that example's
            reference.
        groundtruth: `(P, 2)` [start, end) of the segment in the reference the model sees:
            the cropped window, or the composition of `pieces`.
        pieces: With distractors (`add_distractors`), `(P, K, 3)` rows `(example, start, end)`
            whose concatenation, in order, is each pair's reference (one of them the window;
            unused rows have example -1); `None` when every reference is its window alone.
    """

    query: np.ndarray
    reference: np.ndarray
    window: np.ndarray
    groundtruth: np.ndarray
    pieces: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.query)

    @property
    def reference_lengths(self) -> np.ndarray:
        """`(P,)` lengths of the (cropped, composed) references."""
        if self.pieces is not None:
            return np.sum(self.pieces[:, :, 2] - self.pieces[:, :, 1], axis=1)
        return self.window[:, 1] - self.window[:, 0]

    def reference_pieces(self, k: int) -> list[tuple[int, int, int]]:
        """The `(example, start, end)` rows whose concatenation is pair `k`'s reference."""
        if self.pieces is None:
            return [(int(self.reference[k]), int(self.window[k, 0]), int(self.window[k, 1]))]
        return [tuple(int(v) for v in piece) for piece in self.pieces[k] if piece[0] >= 0]


def draw_pairs(
    examples: Examples,
    rng: np.random.Generator,
    crop_probability: float = CROP_PROBABILITY,
) -> Pairs:
    """One epoch of training pairs: every example is a query once, in a random order.

    Args:
        examples: The train split (each example's query is its own ground truth segment).
        rng: The generator of every random choice.
        crop_probability: Probability of cropping the reference's context.

    Returns:
        `Pairs` of one epoch, `len(examples)` pairs.
    """
    n = len(examples)
    q_len = examples.query_lengths
    r_len = examples.reference_lengths
    order = rng.permutation(n)
    # Candidates of a query: same class, reference window at least as long as the query.
    by_class: dict[int, np.ndarray] = {}
    for c in np.unique(examples.label):
        members = np.flatnonzero(examples.label == c)
        by_class[int(c)] = members[np.argsort(r_len[members], kind="stable")]
    uniform = rng.random((n, 4))  # reference, crop start, crop end, whether to crop
    reference = np.empty(n, np.int64)
    for k, i in enumerate(order):
        members = by_class[int(examples.label[i])]
        first = np.searchsorted(r_len[members], q_len[i], side="left")
        candidates = members[first:]  # never empty: i itself is one
        reference[k] = candidates[min(int(uniform[k, 0] * len(candidates)), len(candidates) - 1)]
    gt = examples.groundtruth[reference].astype(np.int64)
    length = r_len[reference].astype(np.int64)
    off_st = np.minimum((uniform[:, 1] * (gt[:, 0] + 1)).astype(np.int64), gt[:, 0])
    room = length - gt[:, 1]
    off_en = np.minimum((uniform[:, 2] * (room + 1)).astype(np.int64), room)
    crop = uniform[:, 3] < crop_probability
    off_st, off_en = np.where(crop, off_st, 0), np.where(crop, off_en, 0)
    return Pairs(
        query=order.astype(np.int64),
        reference=reference,
        window=np.stack([off_st, length - off_en], axis=1),
        groundtruth=gt - off_st[:, None],
    )


def add_distractors(
    pairs: Pairs,
    examples: Examples,
    rng: np.random.Generator,
    probability: float,
    max_distractors: int = 2,
    max_length: int = MAX_REFERENCE_LENGTH,
) -> Pairs:
    """Composes references that hold actions of other classes besides the matching one.

    ActivityNet's reference windows reach to the nearest segments of the same class, so a
    training reference holds one action, the answer: a model can then find "the action"
    without looking at the query, and what it learns is what the 160 training classes look
    like, which does not carry over to unseen classes. With `probability`, a pair's reference
    becomes its window with 1 to `max_distractors` windows of training examples of other
    classes (each cropped at random around its own action, as `draw_pairs` crops), all in a
    random order: the model must compare with the query to tell the answer from the others.
    Every piece keeps its own video's appearance, as a shot cut does. Pieces are cut short to
    keep the reference within `max_length` (the matching window is never cut).

    Args:
        pairs: One epoch of `draw_pairs`.
        examples: The train split.
        rng: The generator of every random choice.
        probability: Probability that a pair gets distractors.
        max_distractors: The most distractors of a pair.
        max_length: The longest composed reference.

    Returns:
        `Pairs` with `pieces` and `groundtruth` in the composed references.
    """
    n, slots = len(pairs), max_distractors + 1
    pieces = np.full((n, slots, 3), -1, np.int64)
    pieces[:, :, 1:] = 0
    groundtruth = pairs.groundtruth.copy()
    lengths = examples.reference_lengths
    for k in range(n):
        main = (int(pairs.reference[k]), *(int(v) for v in pairs.window[k]))
        chosen = [main]
        if rng.random() < probability:
            room = max_length - (main[2] - main[1])
            label = examples.label[pairs.query[k]]
            for _ in range(int(rng.integers(1, max_distractors + 1))):
                other = int(rng.integers(len(examples)))
                for _ in range(10):  # another class (a split has more than one)
                    if examples.label[other] != label:
                        break
                    other = int(rng.integers(len(examples)))
                if examples.label[other] == label or room < 1:
                    continue
                start, end = examples.groundtruth[other]
                lo = int(rng.integers(0, start + 1))
                hi = int(rng.integers(end, lengths[other] + 1))
                hi = min(hi, lo + room)
                if hi > lo:
                    chosen.append((other, lo, hi))
                    room -= hi - lo
            order = rng.permutation(len(chosen))
            chosen = [chosen[i] for i in order]
        offset = 0
        for j, piece in enumerate(chosen):
            pieces[k, j] = piece
            if piece is main:
                groundtruth[k] += offset
            offset += piece[2] - piece[1]
    return dataclasses.replace(pairs, groundtruth=groundtruth, pieces=pieces)


def pad_to(length: int, multiple: int) -> int:
    """`length` rounded up to a multiple of `multiple` (at least `multiple`)."""
    return max(multiple, -(-int(length) // multiple) * multiple)


def pad_batch(
    queries: list[np.ndarray],
    references: list[np.ndarray],
    groundtruth: np.ndarray,
    query_multiple: int = QUERY_MULTIPLE,
    reference_multiple: int = BUCKET_SPAN,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pads a batch of pairs; padded lengths are rounded up to limit the shapes seen.

    Args:
        queries: B arrays `(Tq_b, D)`.
        references: B arrays `(Tr_b, D)`.
        groundtruth: `(B, 2)` [start, end) in the references.
        query_multiple: Queries are padded to a multiple of this.
        reference_multiple: References are padded to a multiple of this.

    Returns:
        `(inputs, groundtruth)`: the model's input dict (`query` `(B, Tq, D)` float32,
        `query_length` `(B,)` int32, `reference` `(B, Tr, D)` float32, `reference_length`
        `(B,)` int32) and `(B, 2)` int32.
    """
    dim = references[0].shape[-1]
    longest_query = max(len(q) for q in queries)
    longest_reference = max(len(r) for r in references)
    query, q_len = stack_padded(queries, pad_to(longest_query, query_multiple), dim)
    reference, r_len = stack_padded(references, pad_to(longest_reference, reference_multiple), dim)
    inputs = {
        "query": query,
        "query_length": q_len,
        "reference": reference,
        "reference_length": r_len,
    }
    return inputs, np.asarray(groundtruth, np.int32).reshape(-1, 2)


class TrainingStream:
    """The endless, deterministic stream of bucketed training batches.

    Args:
        examples: The train split.
        batch_size: Pairs per (global) batch.
        seed: Seed of the pair draws.
        crop_probability: Probability of cropping a reference's context.
        bucket_span: Reference lengths per bucket.
        query_multiple: Queries are padded to a multiple of this.
        distractor_probability: Probability that a pair's reference also holds windows of
            other classes (`add_distractors`; 0, the original release, never).
    """

    def __init__(
        self,
        examples: Examples,
        batch_size: int,
        seed: int = 0,
        crop_probability: float = CROP_PROBABILITY,
        bucket_span: int = BUCKET_SPAN,
        query_multiple: int = QUERY_MULTIPLE,
        distractor_probability: float = 0.0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.examples = examples
        self.batch_size = batch_size
        self.seed = seed
        self.crop_probability = crop_probability
        self.bucket_span = bucket_span
        self.query_multiple = query_multiple
        self.distractor_probability = distractor_probability

    def plans(self) -> Iterator[Pairs]:
        """Yields the pairs of each batch (`group_by_window` over epochs of `draw_pairs`)."""
        rng = np.random.default_rng(self.seed)
        windows: dict[int, list[np.ndarray]] = {}
        while True:
            pairs = draw_pairs(self.examples, rng, self.crop_probability)
            if self.distractor_probability > 0:
                pairs = add_distractors(pairs, self.examples, rng, self.distractor_probability)
            keys = pairs.reference_lengths // self.bucket_span
            for k in range(len(pairs)):
                window = windows.setdefault(int(keys[k]), [])
                row = [pairs.query[k], pairs.reference[k], *pairs.window[k], *pairs.groundtruth[k]]
                if pairs.pieces is not None:
                    row.extend(pairs.pieces[k].ravel())
                window.append(np.array(row, np.int64))
                if len(window) == self.batch_size:
                    rows = np.stack(window)
                    window.clear()
                    pieces = rows[:, 6:].reshape(len(rows), -1, 3) if rows.shape[1] > 6 else None
                    yield Pairs(rows[:, 0], rows[:, 1], rows[:, 2:4], rows[:, 4:6], pieces)

    def batch(self, pairs: Pairs) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The padded arrays of the pairs of one batch (see `pad_batch`)."""
        queries = [self.examples.query[i] for i in pairs.query]
        references = [
            np.concatenate(
                [self.examples.reference[i][s:e] for i, s, e in pairs.reference_pieces(k)]
            )
            for k in range(len(pairs))
        ]
        return pad_batch(
            queries, references, pairs.groundtruth, self.query_multiple, self.bucket_span
        )

    def batches(self, skip: int = 0) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Yields padded batches after skipping the first `skip` (without reading them).

        Args:
            skip: Batches to skip (those a resumed run already trained on).

        Yields:
            `(inputs, groundtruth)` as `pad_batch` makes them, `batch_size` pairs each.
        """
        for n, pairs in enumerate(self.plans()):
            if n >= skip:
                yield self.batch(pairs)

    def dataset(
        self, skip: int = 0, shards: tuple[int, ...] = (0,), num_shards: int = 1
    ) -> tf.data.Dataset:
        """A `tf.data.Dataset` of the stream; with replicas, each batch's slices `shards` in turn.

        For `tf.data` consumers (`Model.fit`, `distribute_datasets_from_function`); the loop of
        `video_reloc.training` feeds `batches()` directly. A global batch is cut into
        `num_shards` consecutive slices of `batch_size / num_shards`
        pairs (one per replica in sync, padded alike); an input pipeline feeding the replicas
        `shards` yields those slices of every batch, in order.

        Args:
            skip: Batches to skip.
            shards: The slices (replicas) this input pipeline feeds, in replica order.
            num_shards: Slices per batch (replicas in sync); must divide the batch size.

        Returns:
            A dataset of `(inputs, groundtruth)` as `pad_batch` makes them.
        """
        if self.batch_size % num_shards:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by {num_shards} replicas."
            )
        per = self.batch_size // num_shards
        dim = self.examples.feature_dim

        def generate():
            for inputs, gt in self.batches(skip):
                for shard in shards:
                    part = slice(shard * per, (shard + 1) * per)
                    yield {key: value[part] for key, value in inputs.items()}, gt[part]

        signature = (
            {
                "query": tf.TensorSpec((None, None, dim), tf.float32),
                "query_length": tf.TensorSpec((None,), tf.int32),
                "reference": tf.TensorSpec((None, None, dim), tf.float32),
                "reference_length": tf.TensorSpec((None,), tf.int32),
            },
            tf.TensorSpec((None, 2), tf.int32),
        )
        ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
        return ds.prefetch(2)


def evaluation_batches(
    examples: Examples, batch_size: int
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Plain padded batches of fixed pairs, in order (validation and test).

    Args:
        examples: Fixed (query, reference) pairs.
        batch_size: Pairs per batch (the last may be smaller).

    Yields:
        `(inputs, groundtruth)` as `pad_batch` makes them.
    """
    for start in range(0, len(examples), batch_size):
        stop = min(start + batch_size, len(examples))
        yield pad_batch(
            examples.query[start:stop],
            examples.reference[start:stop],
            examples.groundtruth[start:stop],
        )
