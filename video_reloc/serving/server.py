"""The model server: REST (waitress) and gRPC over one model manager, its polling and metrics.

`start_server` runs one in the background; `serve` is the `video-reloc-serve` binary's main.

The REST API runs on waitress, a production WSGI server: its one I/O thread reads every request
whole (headers and body) before a worker thread takes it, so clients that send half a request
and stall hold a connection, not a worker; connections silent for `timeout_ms` are closed, and
`rest_api_num_threads` workers bound the requests handled at once. gRPC reads messages whole
the same way, in its C core, and `grpc_max_threads` bounds its handlers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence

import grpc
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from video_reloc.serving.config import (
    BatchingParameters,
    ConfigError,
    ModelConfig,
    MonitoringConfig,
    parse_batching_parameters,
    parse_model_config,
    parse_monitoring_config,
    read_config_file,
)
from video_reloc.serving.grpc_api import start_grpc_server
from video_reloc.serving.manager import ModelManager
from video_reloc.serving.metrics import Metrics
from video_reloc.serving.rest_api import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TIMEOUT_MS, RestApi
from video_reloc.serving.versions import ServedVersion
from video_reloc.warmup import WarmupShape

DEFAULT_PORT = 8500
"""TensorFlow Serving's gRPC port."""
DEFAULT_REST_API_PORT = 8501
DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS = 1.0
DEFAULT_NUM_THREADS = 4 * (os.cpu_count() or 1)
"""Worker threads of each API, as TensorFlow Serving's default: four per CPU."""
MAX_CONNECTIONS = 1000
"""Open REST connections at most; past it, new ones wait to be accepted."""

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


class _JsonErrorTask(ErrorTask):
    """waitress' answer to a request it refuses itself (too large, malformed), in JSON."""

    def execute(self):
        error = self.request.error
        if error.code == 413:
            limit = self.channel.server.adj.max_request_body_size
            message = f"body: over the limit of {limit} bytes"
        else:
            message = f"request: {error.reason}: {error.body}"
        body = json.dumps({"error": message}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    error_task_class = _JsonErrorTask


class _RestServer(TcpWSGIServer):
    channel_class = _Channel


class ModelServer:
    """REST and gRPC servers over one `ModelManager`, with the thread polling its models.

    Args:
        manager: The models.
        host: The address the REST API listens on.
        rest_api_port: The REST port (0: a free one; `None`: no REST API).
        grpc_port: The gRPC port (0: a free one; `None`: no gRPC API).
        grpc_host: The address the gRPC API listens on (`None`: `host`).
        max_request_bytes: Larger REST bodies get HTTP 413; larger gRPC messages
            RESOURCE_EXHAUSTED.
        timeout_ms: A request waiting longer for the model gets HTTP 503 (gRPC:
            DEADLINE_EXCEEDED); a REST connection silent this long is closed.
        rest_api_num_threads: REST requests handled at once.
        grpc_max_threads: gRPC requests handled at once.
        monitoring: Where the REST API serves the Prometheus metrics.

    Attributes:
        rest_api_port: The REST port, or `None`.
        grpc_port: The gRPC port, or `None`.
        metrics: The server's `Metrics`.
    """

    def __init__(
        self,
        manager: ModelManager,
        host: str = "0.0.0.0",
        rest_api_port: int | None = DEFAULT_REST_API_PORT,
        grpc_port: int | None = None,
        grpc_host: str | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        rest_api_num_threads: int = DEFAULT_NUM_THREADS,
        grpc_max_threads: int = DEFAULT_NUM_THREADS,
        monitoring: MonitoringConfig | None = None,
    ):
        if rest_api_port is None and grpc_port is None:
            raise ValueError("serve at least one API: give a REST or a gRPC port")
        if monitoring is not None and monitoring.prometheus_enabled and rest_api_port is None:
            raise ValueError("Prometheus metrics are served by the REST API: give a REST port")
        self.manager = manager
        self.metrics = Metrics(manager)
        self._poller: _Poller | None = None
        self._stopped = threading.Event()
        self._rest: _RestServer | None = None
        self._rest_thread: threading.Thread | None = None
        self._grpc: grpc.Server | None = None
        self.rest_api_port: int | None = None
        self.grpc_port: int | None = None
        try:
            if rest_api_port is not None:
                metrics_path = None
                if monitoring is not None and monitoring.prometheus_enabled:
                    metrics_path = monitoring.prometheus_path
                app = RestApi(manager, max_request_bytes, timeout_ms, self.metrics, metrics_path)
                self._rest = _make_rest_server(
                    app, host, rest_api_port, rest_api_num_threads, timeout_ms, max_request_bytes
                )
                self.rest_api_port = int(self._rest.effective_port)
            if grpc_port is not None:
                self._grpc, self.grpc_port = start_grpc_server(
                    manager,
                    self.metrics,
                    grpc_host or host,
                    grpc_port,
                    timeout_ms / 1000.0,
                    grpc_max_threads,
                    max_request_bytes,
                )
        except BaseException:
            self._close_sockets()
            raise
        if self._rest is not None:
            self._rest_thread = threading.Thread(
                target=self._rest.run, name="rest-api", daemon=True
            )
            self._rest_thread.start()

    @property
    def port(self) -> int | None:
        """The REST port (the gRPC one without REST)."""
        return self.rest_api_port if self.rest_api_port is not None else self.grpc_port

    @property
    def polling(self) -> bool:
        """Whether the base paths are being polled."""
        return self._poller is not None and self._poller.thread.is_alive()

    def start_polling(self, wait_seconds: float) -> None:
        """Polls the manager's base paths every `wait_seconds` (0 or less: never)."""
        if wait_seconds > 0 and not self.polling:
            logger.info("Polling the models' base paths every %g s", wait_seconds)
            self._poller = _Poller(self.manager, wait_seconds)

    def serve_forever(self) -> None:
        """Blocks until `shutdown` (from another thread) or Ctrl-C."""
        try:
            while not self._stopped.wait(0.5):
                pass
        finally:
            self.shutdown()

    def _close_sockets(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        if self._rest is not None:
            wasyncore.close_all(self._rest._map)
            self._rest.task_dispatcher.shutdown(timeout=1)

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Stops both APIs and the polling; requests in flight get up to `grace_s` to finish.

        The versions stay loaded (see `ModelManager.close`).
        """
        if self._stopped.is_set() and self._rest is None and self._grpc is None:
            return
        self._stopped.set()
        if self._poller is not None:
            self._poller.stop()
        if self._grpc is not None:
            self._grpc.stop(grace=grace_s).wait(grace_s + 1)
            self._grpc = None
        if self._rest is not None:
            rest, thread = self._rest, self._rest_thread
            self._rest = None
            # The I/O loop closes its own channels (a thunk runs in its thread), then ends.
            try:
                rest.trigger.pull_trigger(lambda: wasyncore.close_all(rest._map))
            except OSError:
                # The loop's wake-up pipe is gone (the loop closed it on a hang-up): close the
                # channels from here; the loop ends when it finds its map empty.
                wasyncore.close_all(rest._map, ignore_all=True)
            if thread is not None:
                thread.join(grace_s + 1)
            rest.task_dispatcher.shutdown(timeout=grace_s)


def _make_rest_server(
    app: RestApi,
    host: str,
    port: int,
    threads: int,
    timeout_ms: int,
    max_request_bytes: int,
) -> _RestServer:
    """waitress' server of `app` (as `waitress.create_server`, with JSON errors)."""
    timeout_s = max(timeout_ms / 1000.0, 1.0)
    adjustments = Adjustments(
        host=host,
        port=port,
        threads=threads,
        channel_timeout=timeout_s,
        cleanup_interval=min(30.0, max(1.0, timeout_s / 2)),
        connection_limit=MAX_CONNECTIONS,
        max_request_body_size=max_request_bytes,
        asyncore_use_poll=True,  # no select() limit of 1,024 descriptors
        ident="video-reloc-serve",
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    try:
        return _RestServer(
            app, map={}, dispatcher=dispatcher, adj=adjustments, sockinfo=adjustments.listen[0]
        )
    except OSError as error:
        dispatcher.shutdown(timeout=1)
        raise OSError(f"cannot listen on {host}:{port} for REST: {error.strerror}") from None


def start_server(
    models: ModelManager | Mapping[str, Mapping[int, ServedVersion]],
    port: int | None = DEFAULT_REST_API_PORT,
    host: str = "0.0.0.0",
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    file_system_poll_wait_seconds: float | None = None,
    grpc_port: int | None = None,
    monitoring: MonitoringConfig | None = None,
    rest_api_num_threads: int = DEFAULT_NUM_THREADS,
    grpc_max_threads: int = DEFAULT_NUM_THREADS,
    grpc_host: str | None = None,
) -> ModelServer:
    """Starts a server in background threads (port 0 picks a free one).

    Args:
        models: A loaded `ModelManager`, whose base paths the server polls; or versions loaded
            already, `{name: {version: ServedVersion}}` (see `load_models`), served as they are.
        port: The REST port; `None`: no REST API.
        host: The address to listen on.
        max_request_bytes: Larger bodies get HTTP 413 (gRPC: RESOURCE_EXHAUSTED).
        timeout_ms: A request waiting longer for the model gets HTTP 503 (gRPC:
            DEADLINE_EXCEEDED).
        file_system_poll_wait_seconds: Seconds between polls of a manager's base paths (see
            `ModelManager.poll`); 0 or less: none; `None`: 1 s for a manager, none for
            versions loaded already (there is nothing to poll).
        grpc_port: The gRPC port; `None`: no gRPC API.
        monitoring: Where the REST API serves the Prometheus metrics.
        rest_api_num_threads: REST requests handled at once.
        grpc_max_threads: gRPC requests handled at once.
        grpc_host: The address gRPC listens on (`None`: `host`).

    Returns:
        The server: `server.rest_api_port` and `server.grpc_port` are its ports (`server.port`
        the REST one), `server.shutdown()` stops it and its polling.

    Raises:
        ValueError: If polling is asked for versions loaded already.
        OSError: If a port cannot be listened on.
    """
    is_manager = isinstance(models, ModelManager)
    if file_system_poll_wait_seconds is None:
        file_system_poll_wait_seconds = DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS if is_manager else 0
    if file_system_poll_wait_seconds > 0 and not is_manager:
        raise ValueError("polling the base paths needs a ModelManager, not loaded versions")
    manager = models if is_manager else ModelManager.of_versions(models)
    server = ModelServer(
        manager,
        host,
        rest_api_port=port,
        grpc_port=grpc_port,
        grpc_host=grpc_host,
        max_request_bytes=max_request_bytes,
        timeout_ms=timeout_ms,
        rest_api_num_threads=rest_api_num_threads,
        grpc_max_threads=grpc_max_threads,
        monitoring=monitoring,
    )
    server.start_polling(file_system_poll_wait_seconds)
    return server


def model_configs_from_flags(
    model_name: str | None, model_base_path: str | None, model_config_file: str | None
) -> list[ModelConfig]:
    """The models to serve, from TensorFlow Serving's flags (one model, or a config file).

    Raises:
        ConfigError: For both or neither source, or a config file that cannot be read or
            parsed (naming the file, line and column).
    """
    if model_config_file:
        if model_base_path:
            raise ConfigError("give either --model_config_file or --model_base_path, not both")
        text = read_config_file(model_config_file, "model_config_file")
        return parse_model_config(text, source=model_config_file)
    if not model_base_path:
        raise ConfigError("give --model_base_path (with --model_name) or --model_config_file")
    return [ModelConfig(model_name or "default", model_base_path)]


def serve(
    port: int | None = DEFAULT_PORT,
    rest_api_port: int | None = DEFAULT_REST_API_PORT,
    model_name: str | None = "default",
    model_base_path: str | None = None,
    model_config_file: str | None = None,
    enable_batching: bool = True,
    batching_parameters_file: str | None = None,
    monitoring_config_file: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    rest_api_timeout_in_ms: int = DEFAULT_TIMEOUT_MS,
    rest_api_host: str = "0.0.0.0",
    grpc_host: str = "0.0.0.0",
    rest_api_num_threads: int = DEFAULT_NUM_THREADS,
    grpc_max_threads: int = DEFAULT_NUM_THREADS,
    enable_model_warmup: bool = True,
    model_warmup_shapes: Sequence[WarmupShape] | None = None,
    file_system_poll_wait_seconds: float = DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS,
) -> None:
    """Loads and warms up the models, then serves TensorFlow Serving's gRPC and REST APIs
    until interrupted.

    A base path without a version yet (or with only a half-written `.N.tmp`) is no error: the
    model is reported as not available and its first version is served when it appears.

    Args:
        port: The gRPC port (`None`: no gRPC).
        rest_api_port: The REST port (`None`: no REST).
        model_name: The model's name, with `model_base_path`.
        model_base_path: A folder of numeric versions; the highest is served.
        model_config_file: TensorFlow Serving's text-format `ModelServerConfig`.
        enable_batching: Whether concurrent requests run as one batch (else one by one).
        batching_parameters_file: TensorFlow Serving's text-format `BatchingParameters`.
        monitoring_config_file: TensorFlow Serving's text-format `MonitoringConfig`.
        max_request_bytes: Larger requests are refused.
        rest_api_timeout_in_ms: A request waiting longer for the model is refused.
        rest_api_host: The address the REST API listens on.
        grpc_host: The address the gRPC API listens on.
        rest_api_num_threads: REST requests handled at once.
        grpc_max_threads: gRPC requests handled at once.
        enable_model_warmup: Whether to warm each version up before serving it (TensorFlow
            Serving's flag): its `assets.extra/tf_serving_warmup_requests`, else default shapes.
        model_warmup_shapes: Warm-up shapes for every version instead.
        file_system_poll_wait_seconds: Seconds between polls of the base paths for new or
            removed versions (TensorFlow Serving's flag; see `ModelManager`); 0 or less: the
            versions loaded at start are served until the end.

    Raises:
        ConfigError: For a configuration file that cannot be read or parsed.
        OSError: If a port cannot be listened on.
    """
    configs = model_configs_from_flags(model_name, model_base_path, model_config_file)
    batching = None
    if enable_batching:
        batching = BatchingParameters()
        if batching_parameters_file:
            text = read_config_file(batching_parameters_file, "batching_parameters_file")
            batching = parse_batching_parameters(text, batching_parameters_file)
    monitoring = None
    if monitoring_config_file:
        text = read_config_file(monitoring_config_file, "monitoring_config_file")
        monitoring = parse_monitoring_config(text, monitoring_config_file)
    manager = ModelManager(configs, batching, enable_model_warmup, model_warmup_shapes)
    # Listen first, so that a port in use fails at once and clients see the models LOADING.
    server = start_server(
        manager,
        rest_api_port,
        rest_api_host,
        max_request_bytes,
        rest_api_timeout_in_ms,
        file_system_poll_wait_seconds=0,  # polling starts once the models are loaded
        grpc_port=port,
        monitoring=monitoring,
        rest_api_num_threads=rest_api_num_threads,
        grpc_max_threads=grpc_max_threads,
        grpc_host=grpc_host,
    )
    try:
        manager.load(require_versions=False)
        served = {name: sorted(versions) for name, versions in manager.versions().items()}
        where = []
        if server.grpc_port is not None:
            where.append(f"gRPC on {grpc_host}:{server.grpc_port}")
        if server.rest_api_port is not None:
            where.append(f"REST on http://{rest_api_host}:{server.rest_api_port}")
            if monitoring is not None and monitoring.prometheus_enabled:
                where.append(f"metrics at {monitoring.prometheus_path}")
        logger.info("Serving %s: %s", served, ", ".join(where))
        print(f"Serving {served}: {', '.join(where)}", flush=True)
        server.start_polling(file_system_poll_wait_seconds)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        server.shutdown()
        manager.close()
