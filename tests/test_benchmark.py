"""Tests of the benchmark: Tables 1 and 2 end to end, their files and the binary."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from tiny_data import TINY_SYNTHETIC

from tfds_activitynet_reloc.activitynet_reloc import activitynet_reloc_dataset_builder as anr
from video_reloc import benchmark, data, training
from video_reloc.baselines import ChanceBaseline
from video_reloc.metrics import THRESHOLDS
from video_reloc.model import ABLATIONS

TINY = TINY_SYNTHETIC
KEYS = [f"{t:g}" for t in THRESHOLDS] + ["mean", "mean_iou"]
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_examples(tmp_path_factory):
    """The splits of a tiny synthetic config (10 classes, 3 segments each), in memory."""
    builder = anr.Builder(config=TINY, data_dir=tmp_path_factory.mktemp("tfds"))
    builder.download_and_prepare()
    return {s: data.load_split(s, builder=builder) for s in ("train", "validation", "test")}


def _check_row(row, with_std=False):
    assert set(row) == set(KEYS) | ({"std"} if with_std else set())
    assert all(0.0 <= row[k] <= 100.0 for k in KEYS)
    if with_std:
        assert set(row["std"]) == set(KEYS)


def test_summarize_mean_and_std():
    a = {"0.5": 10.0, "mean": 4.0}
    b = {"0.5": 20.0, "mean": 8.0}
    assert benchmark.summarize([a]) == a
    row = benchmark.summarize([a, b])
    assert row["0.5"] == 15.0 and row["mean"] == 6.0
    np.testing.assert_allclose(row["std"]["0.5"], np.std([10.0, 20.0], ddof=1))


def test_config_rejects_unknown_rows_and_seeds():
    with pytest.raises(ValueError, match="unknown rows"):
        benchmark.BenchmarkConfig(rows=["SST"])
    with pytest.raises(ValueError, match="seeds"):
        benchmark.BenchmarkConfig(seeds=0)
    with pytest.raises(ValueError, match="model_overrides"):
        benchmark.BenchmarkConfig(model_overrides={"dropout": 0.1})


def test_benchmark_with_an_injected_trainer(tiny_examples, tmp_path):
    calls = []

    def fake_trainer(ablation, seed, train, validation):
        calls.append((ablation, seed))
        assert len(train) == 24 and len(validation) >= 1
        return ChanceBaseline(seed=100 * seed + len(calls))

    config = benchmark.BenchmarkConfig(
        output_dir=str(tmp_path), seeds=2, first_seed=5, video_level_steps=2
    )
    tables = benchmark.run_benchmark(config, fake_trainer, examples=tiny_examples)
    # Every model row trained once per seed; "Ours" once, shared by both tables.
    assert sorted(calls) == sorted(
        (a, s) for a in ("base", "base_cross_gating", "base_bilinear", "full") for s in (5, 6)
    )
    assert list(tables.table1) == [
        "Chance",
        "Frame-level baseline",
        "Frame-level baseline (normalized)",
        "Video-level baseline",
        "Ours",
    ]
    assert list(tables.table2) == ["Base", "Base + cross gating", "Base + bilinear", "Ours"]
    assert tables.table1["Ours"] == tables.table2["Ours"]
    for name, row in tables.table1.items():
        _check_row(row, with_std=name in ("Video-level baseline", "Ours"))
    for row in tables.table2.values():
        _check_row(row, with_std=True)
    assert json.loads((tmp_path / "table1.json").read_text()) == tables.table1
    assert json.loads((tmp_path / "table2.json").read_text()) == tables.table2
    markdown = (tmp_path / "tables.md").read_text()
    assert markdown == tables.markdown
    for text in ("Table 1", "Table 2", "SST (paper)", "Base + bilinear (paper)", "std"):
        assert text in markdown


def test_benchmark_parallel_row_on_request(tiny_examples):
    calls = []

    def fake_trainer(kind):
        def train(ablation, seed, train, validation):
            calls.append((kind, ablation, seed))
            return ChanceBaseline(seed=seed)

        return train

    config = benchmark.BenchmarkConfig(
        rows=["Ours", benchmark.PARALLEL],
        seeds=2,
        parallel_overrides={"train_steps": 3},
    )
    tables = benchmark.run_benchmark(
        config, fake_trainer("cgbm"), tiny_examples, train_parallel=fake_trainer("parallel")
    )
    assert sorted(calls) == [
        ("cgbm", "full", 0),
        ("cgbm", "full", 1),
        ("parallel", "full", 0),
        ("parallel", "full", 1),
    ]
    assert list(tables.table1) == ["Ours", "Ours, parallel"]
    assert list(tables.table2) == ["Ours"]
    _check_row(tables.table1["Ours, parallel"], with_std=True)
    assert "| Ours, parallel |" in tables.markdown
    assert "Ours, parallel: preset `parallel`, `train_steps=3`." in tables.markdown
    # Not a default row; its overrides are checked as the model rows' are.
    assert "Ours, parallel" not in benchmark.DEFAULT_ROWS
    with pytest.raises(ValueError, match="parallel_overrides"):
        benchmark.BenchmarkConfig(parallel_overrides={"dropout": 0.1})


def test_model_trainer_of_an_ablation_and_of_the_parallel_row(tiny_examples, tmp_path, monkeypatch):
    seen = []

    class TrainedError(Exception):
        pass

    def fake_train(train_config, examples):
        seen.append(train_config)
        raise TrainedError

    monkeypatch.setattr(benchmark.training, "train", fake_train)
    config = benchmark.BenchmarkConfig(
        model_root=str(tmp_path),
        model_steps=7,
        model_overrides={"normalization": "standardize"},
        parallel_overrides={"batch_size": 5},
    )
    for parallel, ablation in ((False, "base_cross_gating"), (True, "full")):
        with pytest.raises(TrainedError):
            benchmark.model_trainer(config, parallel=parallel)(ablation, 3, None, None)
    cgbm, parallel = seen
    assert (cgbm.architecture, cgbm.train_steps, cgbm.normalization) == ("cgbm", 7, "standardize")
    assert cgbm.ablation == "base_cross_gating"
    assert cgbm.model_dir == str(tmp_path / "base_cross_gating_seed3")
    preset = training.preset_config("parallel", model_dir="")
    assert (parallel.architecture, parallel.normalization) == ("parallel", None)
    assert (parallel.train_steps, parallel.units) == (preset.train_steps, preset.units)
    assert (parallel.batch_size, parallel.seed) == (5, 3)
    assert parallel.model_dir == str(tmp_path / "parallel_full_seed3")


def test_benchmark_rows_subset(tiny_examples):
    config = benchmark.BenchmarkConfig(rows=["Chance", "Frame-level baseline"])
    tables = benchmark.run_benchmark(config, examples=tiny_examples)
    assert list(tables.table1) == ["Chance", "Frame-level baseline"] and tables.table2 == {}
    _check_row(tables.table1["Chance"])
    assert "Table 2" not in tables.markdown


@pytest.mark.slow
def test_benchmark_end_to_end_with_real_training(tiny_examples, tmp_path):
    """Every kind of row, trained for real: the baselines and `Ours` (a Table 2 ablation is
    `Ours` trained with another `ablation`: see the model trainer's test above).

    (The tables' layout with every row is checked with an injected trainer above.)
    """
    config = benchmark.BenchmarkConfig(
        output_dir=str(tmp_path / "out"),
        video_level_steps=3,
        video_level_units=8,
        model_steps=2,
        model_overrides={"normalization": "standardize", "units": 8, "bilinear_rank": 2},
        rows=[
            "Chance",
            "Frame-level baseline",
            "Frame-level baseline (normalized)",
            "Video-level baseline",
            "Ours",
        ],
    )
    tables = benchmark.run_benchmark(config, examples=tiny_examples)
    table1 = json.loads((tmp_path / "out" / "table1.json").read_text())
    table2 = json.loads((tmp_path / "out" / "table2.json").read_text())
    assert list(table1) == [
        "Chance",
        "Frame-level baseline",
        "Frame-level baseline (normalized)",
        "Video-level baseline",
        "Ours",
    ]
    assert list(table2) == ["Ours"]
    for row in table1.values():
        _check_row(row)
    assert table1["Ours"] == table2["Ours"] == tables.table1["Ours"]
    # The model row trained in its own folder, with the overrides on the synthetic preset.
    model_dir = tmp_path / "out" / "models" / "full_seed0"
    assert json.loads((model_dir / "train_config.json").read_text())["ablation"] == "full"
    model = json.loads((model_dir / "model_config.json").read_text())["model"]["config"]
    assert {key: model[key] for key in ABLATIONS["full"]} == ABLATIONS["full"]
    assert model["units"] == 8 and model["normalization"] == "standardize"
    assert sorted(p.name for p in (tmp_path / "out" / "models").iterdir()) == ["full_seed0"]
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert "| Ours |" in markdown and "| Ours (paper) | 43.5 |" in markdown
    assert "Model rows trained with `normalization=standardize`, `units=8`," in markdown


@pytest.mark.slow
def test_binary_writes_the_tables(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "video_reloc.cli.benchmark",
            "--dataset=activitynet_reloc/synthetic",
            f"--data_dir={tmp_path / 'tfds'}",
            f"--output_dir={out}",
            "--rows=Chance,Frame-level baseline",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table1 = json.loads((out / "table1.json").read_text())
    assert list(table1) == ["Chance", "Frame-level baseline"]
    assert json.loads((out / "table2.json").read_text()) == {}
    assert "200 pairs" in (out / "tables.md").read_text()
    assert "| Frame-level baseline |" in result.stdout
