"""Where trained models live: model directories, checkpoints and SavedModel version folders.

A model directory (`video-reloc-train --model_dir=DIR`) holds

- `model_config.json`: the model's own configuration (its architecture, D and Keras'
  serialization of it, `get_config()` included: `video_reloc.architectures.model_record`),
  from which `model_from_config` rebuilds it;
- `train_config.json`: the run's `video_reloc.training.TrainConfig`;
- `features.json`: how the dataset's features were made (`video_reloc.features`), when known;
- `ckpt-N.index`, `ckpt-N.data-*`: the latest checkpoints (model, optimizer, step, best score);
- `best/ckpt-N.*`: the model of the best validation score;
- `results/*.json`, TensorBoard's `train/` and `validation/`, and `export/<version>/`, the
  SavedModels, in TensorFlow Serving's layout (a base folder of numeric version folders).

Training writes it, evaluation, export and relocalization read it, the server reads the
version folders: all of them find things here. This module imports TensorFlow but not the model
(only `model_from_config` does, when called), the data or the serving code.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from video_reloc.errors import UserError
from video_reloc.signature import SIGNATURE_NAME

if TYPE_CHECKING:
    from video_reloc.model import VideoRelocModel

logger = logging.getLogger(__name__)

MODEL_CONFIG_FILE = "model_config.json"  # in a model dir: the model's configuration
TRAIN_CONFIG_FILE = "train_config.json"  # in a model dir: the training configuration
BEST_DIR = "best"  # in a model dir: the checkpoints of the best model
EXPORT_DIR = "export"  # in a model dir: the SavedModel versions
RESULTS_DIR = "results"  # in a model dir: the JSON results
FEATURE_SPEC_FILE = "features.json"  # in a model dir: how the features were made, when known


def write_json(path: str | pathlib.Path, values: Mapping[str, Any]) -> pathlib.Path:
    """Writes a dict as JSON, atomically: a reader never sees half a file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(dict(values), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def find_model_dir(path: str | pathlib.Path) -> pathlib.Path | None:
    """The model dir holding `path` (a checkpoint or export under it): has `model_config.json`."""
    path = pathlib.Path(path).resolve()
    for candidate in [path, *path.parents][:4]:
        if (candidate / MODEL_CONFIG_FILE).exists():
            return candidate
    return None


def read_model_config(model_dir: str | pathlib.Path) -> dict[str, Any]:
    """The model's configuration recorded by training in `model_dir` (see `model_from_config`)."""
    return json.loads((pathlib.Path(model_dir) / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))


def recorded_feature_spec(model_dir: str | pathlib.Path) -> dict[str, Any] | None:
    """How the features of the model in `model_dir` were made, when training recorded it."""
    path = pathlib.Path(model_dir) / FEATURE_SPEC_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def read_train_config(model_dir: str | pathlib.Path) -> dict[str, Any]:
    """The training configuration recorded in `model_dir` (`{}` if none)."""
    path = pathlib.Path(model_dir) / TRAIN_CONFIG_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def is_saved_model(path: str | pathlib.Path) -> bool:
    """Whether `path` is a SavedModel folder."""
    return (pathlib.Path(path) / "saved_model.pb").exists()


def versions(base: str | pathlib.Path, saved_models_only: bool = True) -> list[int]:
    """The numeric version folders under `base`, ascending.

    Args:
        base: A model's base path (TensorFlow Serving's `--model_base_path`).
        saved_models_only: Only the folders that hold a SavedModel (else every numeric one,
            half-written or not).
    """
    base = pathlib.Path(base)
    if not base.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in base.iterdir()
        if p.is_dir() and p.name.isdigit() and (not saved_models_only or is_saved_model(p))
    )


def latest_saved_model(export_base: str | pathlib.Path) -> pathlib.Path | None:
    """The highest numeric version folder under `export_base` holding a SavedModel."""
    base = pathlib.Path(export_base)
    found = versions(base)
    return base / str(found[-1]) if found else None


def saved_model_folder(path: str | pathlib.Path) -> pathlib.Path:
    """`path` if it is a SavedModel folder, else its highest version folder holding one.

    Raises:
        FileNotFoundError: Neither holds a SavedModel.
    """
    path = pathlib.Path(path)
    if is_saved_model(path):
        return path
    latest = latest_saved_model(path)
    if latest is None:
        raise FileNotFoundError(f"no SavedModel in {path} nor in a version folder of it")
    return latest


def load_signature(path: str | pathlib.Path) -> tuple[Any, Any]:
    """The serving signature of the SavedModel at `path` (see `saved_model_folder`).

    Returns:
        `(signature, loaded)`: the `serving_default` concrete function, and the loaded object
        that owns its variables (keep it alive while the signature is used).
    """
    loaded = tf.saved_model.load(str(saved_model_folder(path)))
    return loaded.signatures[SIGNATURE_NAME], loaded


def checkpoint_candidates(directory: str | pathlib.Path) -> list[str]:
    """Checkpoint prefixes in `directory`, newest first (state file and `ckpt-N.index` files)."""
    directory = pathlib.Path(directory)
    prefixes = {str(p.with_suffix("")) for p in directory.glob("ckpt-*.index")}
    try:
        state = tf.train.get_checkpoint_state(str(directory))
    except (tf.errors.OpError, ValueError) as e:  # a corrupt state file
        logger.warning("Cannot read the checkpoint state of %s: %s", directory, e)
        state = None
    if state is not None:
        prefixes.update(
            str(directory / pathlib.Path(p).name) for p in state.all_model_checkpoint_paths
        )

    def number(prefix: str) -> int:
        tail = prefix.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    return sorted(prefixes, key=number, reverse=True)


def restore_first_good(checkpoint: tf.train.Checkpoint, prefixes: Sequence[str]) -> str | None:
    """Restores the first of `prefixes` that reads completely; warns about the others.

    Args:
        checkpoint: The objects to restore (already built, so restoring is immediate).
        prefixes: Checkpoint prefixes, the preferred first.

    Returns:
        The prefix restored, or `None` when none could be.
    """
    for n, prefix in enumerate(prefixes):
        try:
            checkpoint.read(prefix).assert_existing_objects_matched().expect_partial()
        except Exception as e:  # noqa: BLE001  (any failure to read means a bad checkpoint)
            later = prefixes[n + 1] if n + 1 < len(prefixes) else None
            logger.warning(
                "Checkpoint %s is partial or corrupt (%s: %s); %s.",
                prefix,
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
                f"falling back to {later}" if later else "no older checkpoint to fall back to",
            )
            continue
        return prefix
    return None


def model_from_config(model_config: Mapping[str, Any]) -> VideoRelocModel:
    """Builds an untrained model (of the recorded architecture) from `model_config.json`."""
    from video_reloc import architectures  # the models' layers load only when needed

    return architectures.build_from_record(model_config)


def load_checkpoint_model(
    path: str | pathlib.Path, field: str = "checkpoint"
) -> tuple[VideoRelocModel, str]:
    """A model restored from a checkpoint of training.

    Args:
        path: A checkpoint prefix (`MODEL_DIR/ckpt-300`, `MODEL_DIR/best/ckpt-200`), or a
            folder of checkpoints (`MODEL_DIR`: its latest good one; `MODEL_DIR/best`).
            `model_config.json` is looked up in the folders above it.
        field: The argument `path` came from, named in errors.

    Returns:
        `(model, prefix)`: the restored model and the checkpoint prefix read.

    Raises:
        UserError: `path` is not a checkpoint of a model dir, or none of its checkpoints reads.
    """
    path = pathlib.Path(path)
    if not (path.exists() or path.with_name(f"{path.name}.index").exists()):
        raise UserError(f"{path}: no such checkpoint, file or folder", field=field)
    model_dir = find_model_dir(path if path.is_dir() else path.parent)
    if model_dir is None:
        raise UserError(
            f"{path}: not a checkpoint of video-reloc-train (no {MODEL_CONFIG_FILE} in or "
            "above it)",
            field=field,
        )
    prefixes = checkpoint_candidates(path) if path.is_dir() else [str(path)]
    if not prefixes:
        raise UserError(f"{path}: no checkpoint in this folder", field=field)
    model = model_from_config(read_model_config(model_dir))
    restored = restore_first_good(tf.train.Checkpoint(model=model), prefixes)
    if restored is None:
        raise UserError(f"{path}: no readable checkpoint among {prefixes}", field=field)
    return model, restored
