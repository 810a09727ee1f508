"""The versions of each model and their states (LOADING, AVAILABLE, UNLOADING, END).

`ModelManager` loads what the version policies ask for and, polled, keeps the served versions
in step with the version folders on disk; `load_models` loads once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import tensorflow as tf

from video_reloc.serving.config import BatchingParameters, ModelConfig
from video_reloc.serving.errors import ServingError
from video_reloc.serving.versions import (
    LoadCancelledError,
    ServedVersion,
    _warm_up,
    find_versions,
)
from video_reloc.warmup import WarmupShape

logger = logging.getLogger(__name__)


def _aspired_versions(config: ModelConfig, found: Sequence[int]) -> set[int]:
    """The versions the config's version policy asks for among those found on disk."""
    if config.versions:
        return set(config.versions) & set(found)
    if config.num_latest == 0:
        return set(found)
    return set(sorted(found)[-config.num_latest :])


def _fingerprint(path: pathlib.Path) -> tuple[tuple[str, int, int], ...]:
    """(file, size, mtime) of each file under `path`: changes when anything is rewritten."""
    files = []
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            files.append(
                (os.path.relpath(os.path.join(folder, name), path), stat.st_size, stat.st_mtime_ns)
            )
    return tuple(sorted(files))


_ERROR_CODE_NAMES = {
    value: name
    for name, value in vars(tf.errors).items()
    if name.isupper() and isinstance(value, int) and not isinstance(value, bool)
}


def _error_code(error: BaseException) -> str:
    """TensorFlow's error code name for a failed load, as TensorFlow Serving reports it."""
    if isinstance(error, tf.errors.OpError):
        return _ERROR_CODE_NAMES.get(error.error_code, "UNKNOWN")
    if isinstance(error, FileNotFoundError):
        return "NOT_FOUND"
    return "UNKNOWN"


# TensorFlow Serving's version states (`ServableState::ManagerState`, as the REST API shows it).
LOADING = "LOADING"
AVAILABLE = "AVAILABLE"
UNLOADING = "UNLOADING"
END = "END"

LOAD_RETRY_INTERVAL_S = 60.0
"""A version whose load failed is retried when its files change, else after this long."""


@dataclasses.dataclass(eq=False)
class _Entry:
    """One version of a model as the manager knows it."""

    state: str
    served: ServedVersion | None = None
    error_code: str = "OK"
    error_message: str = ""
    refs: int = 0  # requests using `served` now
    fingerprint: tuple | None = None  # of the files of a failed load
    failed_at: float | None = None


class ModelManager:
    """The versions of each model and their states, kept in step with the base paths.

    `load` loads what the version policies ask for at start (strictly: any failure raises; a
    base path without a version yet is waited for, unless `require_versions`); `poll` then
    brings the served versions in line with the version folders found on disk, as
    TensorFlow Serving's file system polling and availability-preserving policy do:

    - a version the policy asks for that is not loaded is loaded (highest first) and warmed up
      (state LOADING) and only then served (AVAILABLE);
    - a loaded version the policy no longer asks for is unloaded once a version it asks for is
      AVAILABLE (or when it asks for none, or to keep only the highest of several): it stops
      taking requests (UNLOADING) and is closed when the requests using it have finished (END);
    - a version folder without `saved_model.pb` is not a version yet; a version whose load fails
      is logged (naming its path), reported END with the error and retried on a later poll when
      its files change (else after `LOAD_RETRY_INTERVAL_S`), the other versions serving on;
    - a base path that is not a folder keeps its loaded versions (logged); one that holds no
      version at all has them all unloaded (TensorFlow Serving's default, logged).

    Request handlers take a version with `acquire` (thread-safe with the polling), by number,
    by label (the config's `version_labels`) or the highest AVAILABLE one.

    Args:
        configs: The models.
        batching: Batching parameters shared by all versions; `None` disables batching.
        enable_model_warmup: Whether to run each version's warm-up requests before serving it
            (see `ServedVersion.warmup_requests`).
        model_warmup_shapes: Warm-up shapes for every version, instead of its own requests.

    Attributes:
        on_batch: Called with (model name, version, rows) for each batch a version runs (the
            server's metrics set it).
    """

    def __init__(
        self,
        configs: Sequence[ModelConfig] = (),
        batching: BatchingParameters | None = None,
        enable_model_warmup: bool = True,
        model_warmup_shapes: Sequence[WarmupShape] | None = None,
    ):
        self.configs = list(configs)
        self._labels = {c.name: dict(c.version_labels) for c in self.configs}
        self.on_batch: Callable[[str, int, int], None] | None = None
        self.batching = batching
        self.enable_model_warmup = enable_model_warmup
        self.model_warmup_shapes = model_warmup_shapes
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._models: dict[str, dict[int, _Entry]] = {c.name: {} for c in self.configs}
        self._problems: dict[str, str | None] = {}
        self._closed = False

    @classmethod
    def of_versions(cls, models: Mapping[str, Mapping[int, ServedVersion]]) -> ModelManager:
        """A manager of versions loaded already (as `load_models` returns), with nothing to poll."""
        manager = cls()
        for name, versions in models.items():
            manager._models[name] = {
                version: _Entry(AVAILABLE, served) for version, served in versions.items()
            }
        return manager

    # Loading.

    def load(self, require_versions: bool = True) -> None:
        """Loads and warms up the versions each config asks for (all or nothing).

        Args:
            require_versions: Whether a base path without a version (or without a version
                the policy asks for) is an error; otherwise that model is reported as not
                available, logged, and its first version is served when a poll finds it (as
                TensorFlow Serving does).

        Raises:
            FileNotFoundError: If the base path is a SavedModel itself (not a folder of
                versions) or, with `require_versions`, holds no version (or not a requested one).
            RuntimeError: If a warm-up request fails.
            Exception: Whatever loading a SavedModel raises.
        """
        try:
            for config in self.configs:
                found = find_versions(config.base_path)
                if (pathlib.Path(config.base_path) / "saved_model.pb").exists():
                    raise FileNotFoundError(
                        f"model {config.name!r}: base path {config.base_path} is a SavedModel "
                        "itself; pass its parent, which holds numeric version folders"
                    )
                missing = sorted(set(config.versions) - set(found))
                problem = None
                if not found:
                    problem = (
                        f"no numeric version folder with a SavedModel under {config.base_path}"
                    )
                elif missing:
                    problem = (
                        f"versions {missing} not found under {config.base_path} (found {found})"
                    )
                if problem and require_versions:
                    raise FileNotFoundError(f"model {config.name!r}: {problem}")
                if problem:
                    self._report(config.name, f"{problem}; serving it once one appears")
                for version in sorted(_aspired_versions(config, found)):
                    self._load(config, version, strict=True)
        except BaseException:
            self.close()
            raise

    def _load(
        self,
        config: ModelConfig,
        version: int,
        strict: bool,
        should_stop: Callable[[], bool] | None = None,
    ) -> bool:
        """Loads and warms up one version, then serves it; whether it is AVAILABLE."""
        name = config.name
        path = pathlib.Path(config.base_path) / str(version)
        fingerprint = _fingerprint(path)
        entry = _Entry(LOADING)
        with self._lock:
            if self._closed:
                return False
            self._models.setdefault(name, {})[version] = entry
        logger.info("Loading model %s version %d from %s", name, version, path)
        served = None
        try:
            served = ServedVersion(name, version, path, self.batching, on_batch=self._observe_batch)
            if self.enable_model_warmup:
                _warm_up(served, self.model_warmup_shapes, should_stop)
        except Exception as error:  # noqa: BLE001 - a bad version must not stop the server
            if served is not None:
                served.close()
            cancelled = isinstance(error, LoadCancelledError)
            with self._lock:
                entry.state = END
                if not cancelled:
                    entry.error_code = _error_code(error)
                    entry.error_message = f"loading {path} failed: {error}"
                    entry.fingerprint, entry.failed_at = fingerprint, time.monotonic()
                serving = self._available(name)
            if strict:
                raise
            if cancelled:
                logger.info("%s", error)
            else:
                logger.error(
                    "Model %s version %d: loading %s failed, so it is not served (still serving "
                    "versions %s); retrying when its files change: %s: %s",
                    name,
                    version,
                    path,
                    serving,
                    type(error).__name__,
                    error,
                )
            return False
        with self._lock:
            closed = self._closed
            if not closed:
                entry.served, entry.state = served, AVAILABLE
            serving = self._available(name)
        if closed:
            served.close()
            entry.state = END
            return False
        logger.info(
            "Model %s version %d is AVAILABLE (serving versions %s)", name, version, serving
        )
        return True

    def _observe_batch(self, name: str, version: int, rows: int) -> None:
        if self.on_batch is not None:
            self.on_batch(name, version, rows)

    # Polling.

    def poll(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Brings each model's versions in line with its base path once; never raises.

        Args:
            should_stop: Asked between steps; `True` ends the poll early (the server stops).
        """
        with self._poll_lock:
            for config in self.configs:
                if should_stop() or self._closed:
                    return
                try:
                    self._poll_model(config, should_stop)
                except Exception:  # noqa: BLE001 - polling goes on
                    logger.exception(
                        "Polling model %s under %s failed", config.name, config.base_path
                    )

    def _report(self, name: str, problem: str | None) -> None:
        """Logs a model's base path problem once, until it changes."""
        if self._problems.get(name) != problem and problem is not None:
            logger.warning("Model %s: %s", name, problem)
        self._problems[name] = problem

    def _poll_model(self, config: ModelConfig, should_stop: Callable[[], bool]) -> None:
        base = pathlib.Path(config.base_path)
        if not base.is_dir():
            self._report(
                config.name, f"base path {base} is not a folder; keeping the versions loaded"
            )
            return
        found = find_versions(base)
        aspired = _aspired_versions(config, found)
        problem = None
        if not found:
            problem = f"no numeric version folder with a SavedModel under {base}"
            problem += "; unloading its versions" if self.versions().get(config.name) else ""
        elif config.versions and not aspired:
            problem = f"none of versions {sorted(config.versions)} under {base} (found {found})"
        self._report(config.name, problem)
        self._unload_unaspired(config.name, aspired)
        for version in sorted(aspired, reverse=True):
            if should_stop():
                return
            if self._wants_load(config.name, version, base / str(version)):
                self._load(config, version, strict=False, should_stop=should_stop)
                self._unload_unaspired(config.name, aspired)

    def _wants_load(self, name: str, version: int, path: pathlib.Path) -> bool:
        with self._lock:
            entry = self._models.get(name, {}).get(version)
        if entry is None:
            return True
        if entry.state != END:
            return False
        if entry.failed_at is None:
            return True  # unloaded earlier, its folder back again
        return (
            _fingerprint(path) != entry.fingerprint
            or time.monotonic() - entry.failed_at >= LOAD_RETRY_INTERVAL_S
        )

    def _unload_unaspired(self, name: str, aspired: set[int]) -> None:
        """Unloads the versions no longer asked for, lowest first, as TensorFlow Serving's
        `AvailabilityPreservingPolicy` does.

        Only while no version is asked for, one that is asked for is AVAILABLE, or more than
        one unwanted version is: a wanted version that fails to load leaves the old one serving.
        """
        with self._lock:
            entries = self._models.get(name, {})
            while True:
                unwanted = sorted(
                    v for v, e in entries.items() if e.state == AVAILABLE and v not in aspired
                )
                wanted_available = any(
                    v in entries and entries[v].state == AVAILABLE for v in aspired
                )
                if not unwanted or not (not aspired or wanted_available or len(unwanted) > 1):
                    return
                version = unwanted[0]
                entry = entries[version]
                entry.state = UNLOADING
                logger.info(
                    "Unloading model %s version %d (%d request(s) in flight; serving versions %s)",
                    name,
                    version,
                    entry.refs,
                    self._available(name),
                )
                if entry.refs == 0:
                    self._finish_unload(name, version, entry)

    def _finish_unload(self, name: str, version: int, entry: _Entry) -> None:
        """Closes an UNLOADING version that no request uses; under `_lock`."""
        if entry.served is not None:
            entry.served.close()
        entry.served, entry.state = None, END
        logger.info("Unloaded model %s version %d", name, version)

    # Serving.

    def _available(self, name: str) -> list[int]:
        """The AVAILABLE versions of a model, ascending; under `_lock`."""
        return sorted(v for v, e in self._models.get(name, {}).items() if e.state == AVAILABLE)

    def _model(self, name: str) -> dict[int, _Entry]:
        if name not in self._models:
            raise ServingError(
                f"model: {name!r} is not served (serving {sorted(self._models)})", "NOT_FOUND"
            )
        return self._models[name]

    def _no_version(self, name: str) -> ServingError:
        base = next((c.base_path for c in self.configs if c.name == name), None)
        where = f": waiting for a version folder under {base}" if base else ""
        return ServingError(f"model: {name!r} has no version available yet{where}", "NOT_FOUND")

    def resolve_label(self, name: str, label: str) -> int:
        """The version a model's label points at (TensorFlow Serving's `version_labels`).

        Raises:
            ServingError: NOT_FOUND for an unknown model or label.
        """
        with self._lock:
            self._model(name)
        labels = self._labels.get(name, {})
        if label not in labels:
            raise ServingError(
                f"version_label: {label!r} is not defined for model {name!r} (labels: "
                f"{sorted(labels)})",
                "NOT_FOUND",
            )
        return labels[label]

    def labels(self, name: str) -> dict[str, int]:
        """The version labels of a model (`{label: version}`)."""
        return dict(self._labels.get(name, {}))

    @contextlib.contextmanager
    def acquire(
        self, name: str, version: str | int | None = None, label: str | None = None
    ) -> Iterator[ServedVersion]:
        """The AVAILABLE version asked for, kept loaded while in use.

        Args:
            name: The model.
            version: A version number; `None` (and no label): the highest AVAILABLE one.
            label: A version label instead of `version`.

        Raises:
            ServingError: NOT_FOUND for an unknown model or label, or a version that is not
                AVAILABLE.
        """
        if label is not None:
            version = self.resolve_label(name, label)
        with self._lock:
            entries = self._model(name)
            available = self._available(name)
            if version is None:
                if not available:
                    if entries:
                        raise ServingError(
                            f"model: {name!r} has no AVAILABLE version (versions "
                            f"{', '.join(f'{v} {e.state}' for v, e in sorted(entries.items()))})",
                            "NOT_FOUND",
                        )
                    raise self._no_version(name)
                entry = entries[available[-1]]
            else:
                text = str(version)
                entry = entries.get(int(text)) if text.isdigit() else None
                if entry is None or entry.state != AVAILABLE:
                    state = f"it is {entry.state}; " if entry is not None else ""
                    raise ServingError(
                        f"version: {text!r} of model {name!r} is not served ({state}serving "
                        f"{available})",
                        "NOT_FOUND",
                    )
            entry.refs += 1
            served = entry.served
        try:
            yield served
        finally:
            with self._lock:
                entry.refs -= 1
                if entry.refs == 0 and entry.state == UNLOADING:
                    self._finish_unload(name, served.version, entry)

    def status(
        self, name: str, version: str | int | None = None, label: str | None = None
    ) -> list[dict[str, Any]]:
        """TensorFlow Serving's `model_version_status` of a model's versions, highest first.

        Every version the manager has loaded or tried to load is listed, with its state
        (LOADING, AVAILABLE, UNLOADING or END) and, for a failed load, the error.

        Raises:
            ServingError: NOT_FOUND for an unknown model or label, a model with no version
                yet, or a version never loaded.
        """
        if label is not None:
            version = self.resolve_label(name, label)
        with self._lock:
            entries = self._model(name)
            if version is None:
                chosen = sorted(entries, reverse=True)
                if not chosen:
                    raise self._no_version(name)
            else:
                text = str(version)
                if not text.isdigit() or int(text) not in entries:
                    raise ServingError(
                        f"version: {text!r} of model {name!r} is not served (serving "
                        f"{self._available(name)})",
                        "NOT_FOUND",
                    )
                chosen = [int(text)]
            return [
                {
                    "version": str(v),
                    "state": entries[v].state,
                    "status": {
                        "error_code": entries[v].error_code,
                        "error_message": entries[v].error_message,
                    },
                }
                for v in chosen
            ]

    def versions(self) -> dict[str, dict[int, ServedVersion]]:
        """`{name: {version: ServedVersion}}` of the AVAILABLE versions now."""
        with self._lock:
            return {
                name: {v: e.served for v, e in entries.items() if e.state == AVAILABLE}
                for name, entries in self._models.items()
            }

    def has_model(self, name: str) -> bool:
        """Whether `name` is a model this manager serves (with or without versions)."""
        return name in self._models

    def states(self) -> dict[str, dict[int, str]]:
        """`{name: {version: state}}` of every version known, for the metrics."""
        with self._lock:
            return {
                name: {v: e.state for v, e in entries.items()}
                for name, entries in self._models.items()
            }

    def close(self) -> None:
        """Closes every loaded version; a load finishing later is closed, not served."""
        with self._lock:
            self._closed = True
            for entries in self._models.values():
                for entry in entries.values():
                    if entry.served is not None:
                        entry.served.close()
                        entry.served, entry.state = None, END


def load_models(
    configs: Sequence[ModelConfig],
    batching: BatchingParameters | None = None,
    enable_model_warmup: bool = True,
    model_warmup_shapes: Sequence[WarmupShape] | None = None,
) -> dict[str, dict[int, ServedVersion]]:
    """Loads the versions each config asks for, and warms each up (`ModelManager.load`).

    Args:
        configs: The models.
        batching: Batching parameters shared by all versions; `None` disables batching.
        enable_model_warmup: Whether to run each version's warm-up requests before returning
            (see `ServedVersion.warmup_requests`).
        model_warmup_shapes: Warm-up shapes for every version, instead of its own requests.

    Returns:
        `{name: {version: ServedVersion}}`.

    Raises:
        FileNotFoundError: If a base path holds no version (or not a requested one).
        RuntimeError: If a warm-up request fails.
    """
    manager = ModelManager(configs, batching, enable_model_warmup, model_warmup_shapes)
    manager.load()
    return manager.versions()
