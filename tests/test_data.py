"""Tests of the input pipeline: loading, pair draws, crops, buckets, padding, determinism."""

import numpy as np
import pytest
import tensorflow as tf
from tiny_data import TINY_SYNTHETIC

from tfds_activitynet_reloc.activitynet_reloc import activitynet_reloc_dataset_builder as anr
from tfds_activitynet_reloc.activitynet_reloc import synthetic
from video_reloc import data

DIM = 3


def make_examples(seed=0, num_classes=4, per_class=6, max_reference=100):
    """Train-like examples: the query of each is its reference's ground-truth rows."""
    rng = np.random.default_rng(seed)
    queries, references, gts, labels = [], [], [], []
    for c in range(num_classes):
        for _ in range(per_class):
            length = int(rng.integers(5, max_reference))
            start = int(rng.integers(0, length - 1))
            end = int(rng.integers(start + 1, min(length, start + 40) + 1))
            # Row t of the reference holds (id, t, class) so that slices can be checked.
            ref = np.stack(
                [np.full(length, len(references)), np.arange(length), np.full(length, c)], 1
            ).astype(np.float32)
            references.append(ref)
            queries.append(ref[start:end])
            gts.append((start, end))
            labels.append(c)
    return data.Examples(
        query=queries,
        reference=references,
        groundtruth=np.array(gts, np.int32),
        label=np.array(labels, np.int64),
    )


def test_draw_pairs_follows_the_original_rules():
    examples = make_examples()
    pairs = data.draw_pairs(examples, np.random.default_rng(1))
    assert len(pairs) == len(examples)
    assert sorted(pairs.query.tolist()) == list(range(len(examples)))  # each query once
    q_len, r_len = examples.query_lengths, examples.reference_lengths
    assert np.all(examples.label[pairs.reference] == examples.label[pairs.query])
    assert np.all(r_len[pairs.reference] >= q_len[pairs.query])
    window, gt = pairs.window, pairs.groundtruth
    assert np.all(window[:, 0] >= 0) and np.all(window[:, 1] <= r_len[pairs.reference])
    # The window holds the whole segment, which moved by the cut start.
    original = examples.groundtruth[pairs.reference]
    np.testing.assert_array_equal(gt, original - window[:, :1])
    assert np.all(gt[:, 0] >= 0) and np.all(gt[:, 1] <= window[:, 1] - window[:, 0])


def test_crops_are_uniform_and_happen_nine_times_in_ten():
    examples = make_examples(num_classes=1, per_class=1)
    (g0, g1), length = examples.groundtruth[0], examples.reference_lengths[0]
    rng = np.random.default_rng(0)
    windows = np.concatenate([data.draw_pairs(examples, rng).window for _ in range(4000)])
    uncropped = np.all(windows == [0, length], axis=1)
    # P(no cut) = 0.1 + 0.9 / ((g0 + 1) * (length - g1 + 1)).
    expected = 0.1 + 0.9 / ((g0 + 1) * (length - g1 + 1))
    assert abs(uncropped.mean() - expected) < 0.03
    starts = windows[~uncropped, 0]
    ends = length - windows[~uncropped, 1]
    assert starts.min() == 0 and starts.max() == g0
    assert ends.min() == 0 and ends.max() == length - g1
    no_crop = data.draw_pairs(examples, np.random.default_rng(0), crop_probability=0.0)
    np.testing.assert_array_equal(no_crop.window, [[0, length]])


def test_references_are_drawn_among_every_candidate():
    examples = make_examples(num_classes=1, per_class=8)
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(300):
        pairs = data.draw_pairs(examples, rng)
        for q, r in zip(pairs.query, pairs.reference):
            seen.setdefault(int(q), set()).add(int(r))
    q_len, r_len = examples.query_lengths, examples.reference_lengths
    for q, refs in seen.items():
        assert refs == set(np.flatnonzero(r_len >= q_len[q]).tolist())


def test_pad_batch_pads_to_multiples_with_zeros():
    examples = make_examples()
    inputs, gt = data.pad_batch(
        examples.query[:5], examples.reference[:5], examples.groundtruth[:5]
    )
    assert inputs["query"].shape[1] % data.QUERY_MULTIPLE == 0
    assert inputs["reference"].shape[1] % data.BUCKET_SPAN == 0
    np.testing.assert_array_equal(inputs["reference_length"], examples.reference_lengths[:5])
    np.testing.assert_array_equal(inputs["query_length"], examples.query_lengths[:5])
    for b in range(5):
        n = inputs["reference_length"][b]
        np.testing.assert_array_equal(inputs["reference"][b, :n], examples.reference[b])
        assert not inputs["reference"][b, n:].any()
        assert not inputs["query"][b, inputs["query_length"][b] :].any()
    assert gt.dtype == np.int32 and gt.shape == (5, 2)


def test_training_batches_are_bucketed_and_hold_the_drawn_pairs():
    examples = make_examples(num_classes=3, per_class=20)
    stream = data.TrainingStream(examples, batch_size=4, seed=3)
    for (inputs, gt), _ in zip(stream.batches(), range(30)):
        r_len = inputs["reference_length"]
        assert len(r_len) == 4
        assert len(set((r_len // data.BUCKET_SPAN).tolist())) == 1  # one bucket per batch
        assert inputs["reference"].shape[1] == data.pad_to(r_len.max(), data.BUCKET_SPAN)
        for b in range(4):
            ref = inputs["reference"][b, : r_len[b]]
            query = inputs["query"][b, : inputs["query_length"][b]]
            assert len(set(ref[:, 0].tolist())) == 1  # one source reference
            assert np.all(np.diff(ref[:, 1]) == 1)  # a contiguous window of it
            assert ref[0, 2] == query[0, 2]  # same class
            # The ground truth points at the source's segment inside the window.
            source = int(ref[0, 0])
            g0 = examples.groundtruth[source, 0] - ref[0, 1]
            assert gt[b, 0] == g0 and gt[b, 1] - gt[b, 0] == np.diff(examples.groundtruth[source])


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_stream_is_deterministic_and_skipping_resumes_exactly():
    examples = make_examples(num_classes=3, per_class=20)
    a = _take(data.TrainingStream(examples, 4, seed=7).batches(), 12)
    b = _take(data.TrainingStream(examples, 4, seed=7).batches(), 12)
    c = _take(data.TrainingStream(examples, 4, seed=8).batches(), 12)
    resumed = _take(data.TrainingStream(examples, 4, seed=7).batches(skip=9), 3)
    for (x, gx), (y, gy) in zip(a, b):
        np.testing.assert_array_equal(x["reference"], y["reference"])
        np.testing.assert_array_equal(gx, gy)
    assert any(
        x["reference"].shape != y["reference"].shape or not np.array_equal(gx, gy)
        for (x, gx), (y, gy) in zip(a, c)
    )
    for (x, gx), (y, gy) in zip(a[9:], resumed):
        np.testing.assert_array_equal(x["reference"], y["reference"])
        np.testing.assert_array_equal(gx, gy)


def test_dataset_slices_each_batch_for_replicas():
    examples = make_examples(num_classes=3, per_class=20)
    stream = data.TrainingStream(examples, 4, seed=1)
    whole = _take(stream.batches(), 3)
    sliced = list(stream.dataset(shards=(0, 1), num_shards=2).take(6).as_numpy_iterator())
    for k, (inputs, gt) in enumerate(whole):
        for shard in range(2):
            part_inputs, part_gt = sliced[2 * k + shard]
            rows = slice(2 * shard, 2 * shard + 2)
            np.testing.assert_array_equal(part_gt, gt[rows])
            np.testing.assert_array_equal(part_inputs["reference"], inputs["reference"][rows])
    with pytest.raises(ValueError, match="divisible"):
        stream.dataset(num_shards=3)
    spec = stream.dataset().element_spec
    assert spec[0]["reference"].shape.as_list() == [None, None, DIM]
    assert spec[1].dtype == tf.int32


def test_evaluation_batches_keep_the_order():
    examples = make_examples()
    batches = list(data.evaluation_batches(examples, 5))
    assert [len(gt) for _, gt in batches] == [5, 5, 5, 5, 4]
    gts = np.concatenate([gt for _, gt in batches])
    np.testing.assert_array_equal(gts, examples.groundtruth)


def test_load_split_reads_a_built_dataset(tmp_path):
    builder = anr.Builder(config=TINY_SYNTHETIC, data_dir=str(tmp_path))
    builder.download_and_prepare()
    train = data.load_split("train", builder=builder)
    assert len(train) == 24 and train.feature_dim == synthetic.DIM
    for q, r, (s, e) in zip(train.query, train.reference, train.groundtruth):
        np.testing.assert_array_equal(q, r[s:e])
    assert len(set(train.label.tolist())) == 8
    test = data.load_split("test", builder=builder)
    assert len(test.query_id) == len(test) and test.reference_location.shape == (len(test), 2)
    assert set(test.label.tolist()).isdisjoint(train.label.tolist())
    subset = test.subset([0])
    assert len(subset) == 1 and subset.query_id == test.query_id[:1]


def test_stack_padded_zero_pads_and_cuts():
    from video_reloc.padding import stack_padded

    arrays = [np.ones((3, 2)), np.full((5, 2), 2.0), np.zeros((0, 2))]
    stack, lengths = stack_padded(arrays)
    assert stack.shape == (3, 5, 2) and stack.dtype == np.float32
    np.testing.assert_array_equal(lengths, [3, 5, 0])
    np.testing.assert_array_equal(stack[0, 3:], 0.0)
    np.testing.assert_array_equal(stack[1], 2.0)
    cut, lengths = stack_padded(arrays, steps=4, dtype=np.float64)
    assert cut.shape == (3, 4, 2) and cut.dtype == np.float64
    np.testing.assert_array_equal(lengths, [3, 4, 0])


def test_distractors_are_other_classes_around_the_untouched_answer():
    examples = make_examples(num_classes=5, per_class=8)
    rng = np.random.default_rng(4)
    pairs = data.add_distractors(
        data.draw_pairs(examples, rng), examples, rng, probability=0.7, max_length=160
    )
    stream = data.TrainingStream(examples, batch_size=len(pairs))
    inputs, groundtruth = stream.batch(pairs)
    counts = []
    for k in range(len(pairs)):
        pieces = pairs.reference_pieces(k)
        counts.append(len(pieces) - 1)
        n = inputs["reference_length"][k]
        reference = inputs["reference"][k, :n]
        assert n == sum(e - s for _, s, e in pieces) and n <= 160
        # The answer's rows are the matching example's own ground-truth rows, unchanged.
        (g0, g1), example = groundtruth[k], pairs.reference[k]
        o0, o1 = examples.groundtruth[example]
        np.testing.assert_array_equal(reference[g0:g1], examples.reference[example][o0:o1])
        # Every other piece is of another class and holds its own action whole.
        label = examples.label[pairs.query[k]]
        assert set(reference[:, 2].tolist()) == {examples.label[e] for e, _, _ in pieces}
        for e, s, t in pieces:
            if e != example:
                assert examples.label[e] != label
                assert s <= examples.groundtruth[e][0] and t >= min(
                    examples.groundtruth[e][1], s + 1
                )
    counts = np.array(counts)
    assert 0.55 < np.mean(counts > 0) < 0.85 and counts.max() == 2


def test_a_stream_with_distractors_is_deterministic_and_off_by_default():
    examples = make_examples(num_classes=3, per_class=10)

    def first(probability):
        stream = data.TrainingStream(examples, 4, seed=2, distractor_probability=probability)
        return next(stream.batches())

    (a, ga), (b, gb) = first(0.5), first(0.5)
    np.testing.assert_array_equal(a["reference"], b["reference"])
    np.testing.assert_array_equal(ga, gb)
    plain, _ = first(0.0)
    assert next(data.TrainingStream(examples, 4, seed=2).plans()).pieces is None
    np.testing.assert_array_equal(
        plain["reference"], next(data.TrainingStream(examples, 4, seed=2).batches())[0]["reference"]
    )
