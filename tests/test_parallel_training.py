"""The parallel architecture through training, evaluation and export: the functions behind
`video-reloc-train --architecture=parallel`, `video-reloc-evaluate` and `video-reloc-export`
(test_binaries.py runs the binaries themselves on the paper's model)."""

import json

import numpy as np
import pytest
import tensorflow as tf
from test_training import tiny_config

from video_reloc import checkpoints, evaluation, export, training
from video_reloc.metrics import THRESHOLDS


@pytest.fixture(scope="module")
def trained_parallel(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel_training")
    model_dir, data_dir = root / "model", root / "data"
    config = tiny_config(
        model_dir,
        data_dir=str(data_dir),
        architecture="parallel",
        num_images=2,
        eval_batch_size=100,
    )
    return model_dir, data_dir, training.train(config)


@pytest.mark.slow
def test_train_evaluate_export_a_parallel_model(trained_parallel, tmp_path):
    model_dir, data_dir, result = trained_parallel
    assert checkpoints.read_model_config(model_dir)["architecture"] == "parallel"
    results = json.loads((model_dir / "results" / "test.json").read_text())
    assert set(results) == {f"{t:g}" for t in THRESHOLDS} | {"mean", "mean_iou"}
    assert results == pytest.approx(result.test)
    saved_model = model_dir / "export" / "1"
    assert result.export_path == saved_model
    assert checkpoints.is_saved_model(saved_model)

    # The checkpoint is rebuilt as a parallel model (model_config.json) and exported again
    # (what video-reloc-export calls); both SavedModels give the same answers.
    export.export_checkpoint(export.ExportConfig(checkpoint=str(model_dir / "best"), version=7))
    rng = np.random.default_rng(0)
    inputs = {
        "query": tf.constant(rng.standard_normal((2, 5, 64)).astype("float32")),
        "query_length": tf.constant([5, 3], tf.int32),
        "reference": tf.constant(rng.standard_normal((2, 40, 64)).astype("float32")),
        "reference_length": tf.constant([40, 31], tf.int32),
    }
    first, again = (
        tf.saved_model.load(str(path)).signatures["serving_default"](**inputs)
        for path in (saved_model, model_dir / "export" / "7")
    )
    for key in ("start", "end", "probabilities", "attention"):
        np.testing.assert_allclose(first[key].numpy(), again[key].numpy(), rtol=1e-5, atol=1e-6)

    output = tmp_path / "evaluate.json"
    evaluation.evaluate(
        evaluation.EvaluateConfig(
            model=str(model_dir), data_dir=str(data_dir), output=str(output), batch_size=200
        )
    )
    # The SavedModel (XLA) may break an untrained model's near-ties otherwise than Keras did.
    assert json.loads(output.read_text()) == pytest.approx(results, abs=3.0)
