"""The HTTP server: Werkzeug's threaded server of a `RestApi` and the thread polling its models.

`start_server` runs one in the background; `serve` is the `video-reloc-serve` binary's main.
"""

from __future__ import annotations

import logging
import pathlib
import threading
from collections.abc import Mapping, Sequence

from werkzeug.serving import ThreadedWSGIServer

from video_reloc.serving.config import (
    BatchingParameters,
    ModelConfig,
    parse_batching_parameters,
    parse_model_config,
)
from video_reloc.serving.manager import ModelManager
from video_reloc.serving.rest_api import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TIMEOUT_MS, RestApi
from video_reloc.serving.versions import ServedVersion
from video_reloc.warmup import WarmupShape

DEFAULT_REST_API_PORT = 8501
DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS = 1.0

logger = logging.getLogger(__name__)


class _Poller:
    """The thread that polls a manager's base paths every `wait_seconds`."""

    def __init__(self, manager: ModelManager, wait_seconds: float):
        self.manager = manager
        self.wait_seconds = wait_seconds
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="model-version-poller", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.wait_seconds):
            self.manager.poll(self._stop.is_set)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stops polling; a load in progress stops at its next warm-up request."""
        self._stop.set()
        if self.thread is not threading.current_thread() and self.thread.is_alive():
            self.thread.join(timeout_s)
            if self.thread.is_alive():
                logger.warning("The model version poller did not stop within %g s", timeout_s)


class ModelServer(ThreadedWSGIServer):
    """Werkzeug's threaded WSGI server of a `RestApi`, owning the thread that polls its models.

    `shutdown()` and `server_close()` stop the polling; the versions stay loaded (see
    `ModelManager.close`).
    """

    def __init__(self, host: str, port: int, app: RestApi):
        super().__init__(host, port, app)
        self.manager = app.manager
        self._poller: _Poller | None = None

    @property
    def polling(self) -> bool:
        """Whether the base paths are being polled."""
        return self._poller is not None and self._poller.thread.is_alive()

    def start_polling(self, wait_seconds: float) -> None:
        """Polls the manager's base paths every `wait_seconds` (0 or less: never)."""
        if wait_seconds > 0 and not self.polling:
            logger.info("Polling the models' base paths every %g s", wait_seconds)
            self._poller = _Poller(self.manager, wait_seconds)

    def stop_polling(self) -> None:
        """Stops the polling and waits for it, from whichever thread (Werkzeug's
        `serve_forever` calls `server_close` as it ends, while `shutdown` may be waiting)."""
        if self._poller is not None:
            self._poller.stop()

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self.stop_polling()

    def server_close(self) -> None:
        try:
            self.stop_polling()
        finally:
            super().server_close()


def start_server(
    models: ModelManager | Mapping[str, Mapping[int, ServedVersion]],
    port: int = DEFAULT_REST_API_PORT,
    host: str = "0.0.0.0",
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    file_system_poll_wait_seconds: float | None = None,
) -> ModelServer:
    """Starts a threaded server in a background thread (port 0 picks a free one).

    Args:
        models: A loaded `ModelManager`, whose base paths the server polls; or versions loaded
            already, `{name: {version: ServedVersion}}` (see `load_models`), served as they are.
        port: The HTTP port.
        host: The address to listen on.
        max_request_bytes: Bodies beyond this get HTTP 400.
        timeout_ms: A request waiting longer for the model gets HTTP 503.
        file_system_poll_wait_seconds: Seconds between polls of a manager's base paths (see
            `ModelManager.poll`); 0 or less: none; `None`: 1 s for a manager, none for
            versions loaded already (there is nothing to poll).

    Returns:
        The server: `server.port` is its port, `server.shutdown()` stops it and its polling.

    Raises:
        ValueError: If polling is asked for versions loaded already.
    """
    is_manager = isinstance(models, ModelManager)
    if file_system_poll_wait_seconds is None:
        file_system_poll_wait_seconds = DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS if is_manager else 0
    if file_system_poll_wait_seconds > 0 and not is_manager:
        raise ValueError("polling the base paths needs a ModelManager, not loaded versions")
    app = RestApi(models, max_request_bytes=max_request_bytes, timeout_ms=timeout_ms)
    server = ModelServer(host, port, app)
    thread = threading.Thread(target=server.serve_forever, name="rest-api", daemon=True)
    thread.start()
    server.start_polling(file_system_poll_wait_seconds)
    return server


def model_configs_from_flags(
    model_name: str | None, model_base_path: str | None, model_config_file: str | None
) -> list[ModelConfig]:
    """The models to serve, from TensorFlow Serving's flags (one model, or a config file)."""
    if model_config_file:
        if model_base_path:
            raise ValueError("give either --model_config_file or --model_base_path, not both")
        path = pathlib.Path(model_config_file)
        return parse_model_config(path.read_text(encoding="utf-8"), source=str(path))
    if not model_base_path:
        raise ValueError("give --model_base_path (with --model_name) or --model_config_file")
    return [ModelConfig(model_name or "default", model_base_path)]


def serve(
    rest_api_port: int = DEFAULT_REST_API_PORT,
    model_name: str | None = "default",
    model_base_path: str | None = None,
    model_config_file: str | None = None,
    enable_batching: bool = True,
    batching_parameters_file: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    rest_api_timeout_in_ms: int = DEFAULT_TIMEOUT_MS,
    rest_api_host: str = "0.0.0.0",
    enable_model_warmup: bool = True,
    model_warmup_shapes: Sequence[WarmupShape] | None = None,
    file_system_poll_wait_seconds: float = DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS,
) -> None:
    """Loads and warms up the models, then serves TensorFlow Serving's REST API until interrupted.

    Args:
        rest_api_port: The HTTP port.
        model_name: The model's name in URLs, with `model_base_path`.
        model_base_path: A folder of numeric versions; the highest is served.
        model_config_file: TensorFlow Serving's text-format model config, for several models.
        enable_batching: Whether concurrent requests run as one batch (else one by one).
        batching_parameters_file: TensorFlow Serving's text-format batching parameters.
        max_request_bytes: Bodies beyond this get HTTP 400.
        rest_api_timeout_in_ms: A request waiting longer for the model gets HTTP 503.
        rest_api_host: The address to listen on.
        enable_model_warmup: Whether to warm each version up before serving (TensorFlow
            Serving's flag): its `assets.extra/tf_serving_warmup_requests`, else default shapes.
        model_warmup_shapes: Warm-up shapes for every version instead.
        file_system_poll_wait_seconds: Seconds between polls of the base paths for new or
            removed versions (TensorFlow Serving's flag; see `ModelManager`); 0 or less: the
            versions loaded at start are served until the end.
    """
    configs = model_configs_from_flags(model_name, model_base_path, model_config_file)
    batching = None
    if enable_batching:
        batching = BatchingParameters()
        if batching_parameters_file:
            path = pathlib.Path(batching_parameters_file)
            batching = parse_batching_parameters(path.read_text(encoding="utf-8"), str(path))
    manager = ModelManager(configs, batching, enable_model_warmup, model_warmup_shapes)
    manager.load()
    try:
        app = RestApi(
            manager, max_request_bytes=max_request_bytes, timeout_ms=rest_api_timeout_in_ms
        )
        server = ModelServer(rest_api_host, rest_api_port, app)
        served = {name: sorted(versions) for name, versions in manager.versions().items()}
        logger.info("Serving %s on http://%s:%d", served, rest_api_host, server.port)
        print(f"Serving {served} on http://{rest_api_host}:{server.port}", flush=True)
        server.start_polling(file_system_poll_wait_seconds)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        manager.close()
