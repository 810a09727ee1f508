"""The `simulated_c3d` config: ActivityNet's structure, features hard the way C3D's are."""

import json
from collections import Counter

import numpy as np
import pytest

from tfds_activitynet_reloc.activitynet_reloc import activitynet_reloc_dataset_builder as anr
from tfds_activitynet_reloc.activitynet_reloc import activitynet_statistics as stats
from tfds_activitynet_reloc.activitynet_reloc import simulated_c3d as sim
from tfds_activitynet_reloc.reorganize import PAIR_SEED, RELEASE_PERM, draw_pairs, reorganize
from video_reloc.baselines import ChanceBaseline, FrameLevelBaseline
from video_reloc.metrics import accuracy_at_thresholds, temporal_iou


@pytest.fixture(scope="module")
def test_split():
    return sim.generate(splits=("test",))


def test_statistics_are_those_of_the_reorganized_activitynet(reference_dir):
    annotations = json.loads(
        (reference_dir / "activitynet" / "activity_net.v1-3.reconstructed.json").read_text()
    )
    lengths = json.loads((reference_dir / "video_reloc_release" / "length.json").read_text())
    segments = reorganize(annotations, lengths, RELEASE_PERM)
    histogram = np.zeros_like(np.asarray(stats.LENGTH_HISTOGRAM))
    for split, items in segments.items():
        counts = sorted(Counter(s["label"] for s in items).values())
        assert tuple(counts) == stats.SEGMENTS_PER_CLASS[split], split
        for s in items:
            reference = s["location"][1] - s["location"][0]
            column = np.searchsorted(stats.REFERENCE_BIN_EDGES, reference, side="right") - 1
            histogram[s["groundtruth"][1] - s["groundtruth"][0] - 1, column] += 1
    np.testing.assert_array_equal(histogram, stats.LENGTH_HISTOGRAM)


def test_structure_follows_activitynet(test_split):
    items = test_split.segments["test"]
    assert list(test_split.segments) == ["test"] and len(items) == 978
    assert sorted(Counter(s["label"] for s in items).values()) == list(
        stats.SEGMENTS_PER_CLASS["test"]
    )
    groundtruth = np.array([s["groundtruth"] for s in items])
    window = np.array([s["location"][1] for s in items])
    assert (groundtruth[:, 0] >= 0).all() and (groundtruth[:, 1] <= window).all()
    length = groundtruth[:, 1] - groundtruth[:, 0]
    assert length.min() >= 1 and length.max() <= 32 and window.max() <= 300
    # Median lengths near ActivityNet's (ground truth 13, reference 50 features).
    assert 9 <= np.median(length) <= 17 and 38 <= np.median(window) <= 65
    for s in items[:50]:
        features = test_split.features[s["id"]]
        assert features.shape == (s["location"][1], sim.DIM) and features.dtype == np.float32
        assert np.isfinite(features).all()


def test_deterministic_and_each_split_its_own_draws(test_split):
    both = sim.generate(splits=("validation", "test"))
    assert both.segments["test"] == test_split.segments["test"]
    for s in test_split.segments["test"][:20]:
        np.testing.assert_array_equal(both.features[s["id"]], test_split.features[s["id"]])
    assert {s["label"] for s in both.segments["validation"]}.isdisjoint(
        {s["label"] for s in both.segments["test"]}
    )


def test_shots_dominate_and_the_action_is_small(test_split):
    render = sim.Rendering()
    assert np.hypot(render.scene_norm, render.shot_norm) >= 5 * render.action_norm
    # Measured on rows: a video with its action, and the same draws without it.
    data = test_split
    quiet = sim.generate(splits=("test",), render=sim.Rendering(action_norm=0.0))
    ratios = []
    for s in data.segments["test"][:100]:
        a, b = s["groundtruth"]
        rows = data.features[s["id"]][a:b]
        action = rows - quiet.features[s["id"]][a:b]
        ratios.append(np.linalg.norm(rows, axis=1).mean() / np.linalg.norm(action, axis=1).mean())
    assert np.median(ratios) >= 5, np.median(ratios)


def test_raw_matching_fails_and_matching_without_the_local_mean_does_not(test_split):
    items = test_split.segments["test"]
    pairs, skipped = draw_pairs(items, seed=PAIR_SEED)
    assert not skipped
    pairs = pairs[:300]
    queries = [
        test_split.features[items[q]["id"]][slice(*items[q]["groundtruth"])] for q, _ in pairs
    ]
    references = [test_split.features[items[r]["id"]] for _, r in pairs]
    truth = np.array([items[r]["groundtruth"] for _, r in pairs])

    def mean_accuracy(predictor, transform=lambda x: x):
        segments = predictor.predict(
            [transform(q) for q in queries], [transform(r) for r in references]
        )
        return accuracy_at_thresholds(temporal_iou(segments, truth))["mean"]

    chance = mean_accuracy(ChanceBaseline(seed=0))
    raw = mean_accuracy(FrameLevelBaseline())
    local = mean_accuracy(FrameLevelBaseline(), sim.local_mean_removed)
    assert raw < 2 * chance, (chance, raw)
    assert local >= 3 * chance, (chance, local)


def test_builder_config():
    builder = anr.Builder(config="simulated_c3d", data_dir="/nonexistent")
    assert builder.info.features["reference"].shape == (None, sim.DIM)
    assert builder.info.features["label"].num_classes == stats.NUM_CLASSES
