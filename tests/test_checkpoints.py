"""Model directories, checkpoints and SavedModel version folders (`video_reloc.checkpoints`)."""

import json

import pytest
import tensorflow as tf

from video_reloc import architectures, checkpoints
from video_reloc.errors import UserError
from video_reloc.model import build_model


def tiny_model_config(**changes):
    """What training records in `model_config.json`, for a tiny model."""
    config = dict(
        feature_dim=4,
        ablation="full",
        units=4,
        bilinear_rank=2,
        encoder_dropout=0.0,
        matching_dropout=0.0,
    )
    return {**config, **changes}


def test_versions_lists_numeric_folders_holding_a_saved_model(tmp_path):
    for name in ("1", "3", "10", "2.tmp", "notes"):
        (tmp_path / name).mkdir()
    for name in ("1", "10"):
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    (tmp_path / "7").write_text("a file, not a folder")
    assert checkpoints.versions(tmp_path) == [1, 10]
    assert checkpoints.versions(tmp_path, saved_models_only=False) == [1, 3, 10]
    assert checkpoints.latest_saved_model(tmp_path) == tmp_path / "10"
    assert checkpoints.versions(tmp_path / "missing") == []
    assert checkpoints.latest_saved_model(tmp_path / "missing") is None


def test_write_json_is_atomic_and_read_back(tmp_path):
    path = checkpoints.write_json(tmp_path / "results" / "test.json", {"b": 2, "a": 1.5})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": 2}
    assert [p.name for p in path.parent.iterdir()] == ["test.json"]  # no temporary left


def test_checkpoints_are_found_restored_and_bad_ones_skipped(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    model_config = tiny_model_config()
    (model_dir / checkpoints.MODEL_CONFIG_FILE).write_text(json.dumps(model_config))
    model = checkpoints.model_from_config(model_config)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(model_dir), 3)
    manager.save(checkpoint_number=5)
    weights = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1.0 for w in weights])
    manager.save(checkpoint_number=9)
    prefixes = checkpoints.checkpoint_candidates(model_dir)
    assert [p.rsplit("-", 1)[1] for p in prefixes] == ["9", "5"]
    for data_file in model_dir.glob("ckpt-9.data-*"):
        data_file.write_bytes(b"corrupt")  # the newest is broken: the older one is taken
    restored, prefix = checkpoints.load_checkpoint_model(model_dir)
    assert prefix.endswith("ckpt-5")
    for a, b in zip(restored.get_weights(), weights):
        assert (a == b).all()
    assert checkpoints.find_model_dir(model_dir / "best" / "x") == model_dir.resolve()


def test_load_checkpoint_model_names_the_argument(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint") as error:
        checkpoints.load_checkpoint_model(tmp_path / "ckpt-3", field="checkpoint")
    assert error.value.field == "checkpoint"
    with pytest.raises(UserError, match="not a checkpoint of video-reloc-train"):
        checkpoints.load_checkpoint_model(tmp_path)


def test_model_from_config_builds_the_recorded_model():
    model = checkpoints.model_from_config(
        tiny_model_config(feature_dim=6, ablation="base", encoder_dropout=0.1, matching_dropout=0.2)
    )
    reference = build_model(
        feature_dim=6, ablation="base", units=4, bilinear_rank=2, encoder_dropout=0.1
    )
    assert len(model.weights) == len(reference.weights)
    assert [w.shape for w in model.weights] == [w.shape for w in reference.weights]


@pytest.mark.parametrize("architecture", ["cgbm", "parallel"])
def test_the_model_record_rebuilds_the_model_from_its_own_config(architecture):
    """`model_config.json` holds the model's `get_config()`; a record of builder fields loads."""
    model = architectures.build_from_config(
        {"feature_dim": 6, "architecture": architecture, "units": 4, "normalization": None},
        seed=0,
    )
    record = architectures.model_record(model)
    assert json.loads(json.dumps(record)) == record
    assert (record["architecture"], record["feature_dim"]) == (architecture, 6)
    own = model.get_config()
    del own["name"]
    assert record["model"]["config"] == json.loads(json.dumps(own))
    rebuilt = checkpoints.model_from_config(record)
    assert type(rebuilt) is type(model)
    assert rebuilt.get_config() | {"name": ""} == model.get_config() | {"name": ""}
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]
    legacy = checkpoints.model_from_config(tiny_model_config(architecture=architecture))
    assert type(legacy) is type(model)


def test_saved_model_folder_takes_the_highest_version(tmp_path):
    for name in ("1", "2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    assert checkpoints.saved_model_folder(tmp_path) == tmp_path / "2"
    assert checkpoints.saved_model_folder(tmp_path / "1") == tmp_path / "1"
    with pytest.raises(FileNotFoundError, match="no SavedModel in"):
        checkpoints.saved_model_folder(tmp_path / "missing")
