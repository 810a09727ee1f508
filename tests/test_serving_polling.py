"""Tests of the server's version polling: versions that appear, fail, vanish, while it serves.

Versions are copies of one small export (no XLA, warm-up off unless a test needs it), and the
base paths are polled every 50 ms. Nothing asserts wall-clock times: tests wait (with a generous
timeout) until the status endpoint shows what they expect, or poll synchronously with
`ModelManager.poll`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from net import free_ports, request
from small_model_spec import FEATURE_DIM
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from video_reloc.serving import (
    BatchingParameters,
    ModelConfig,
    ModelManager,
    ServedVersion,
    ServingError,
    load_models,
    start_server,
)

POLL_S = 0.05
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def exported(small_export):
    """One small SavedModel (without XLA; its warm-up file holds one small request)."""
    return small_export


def add_version(base, version, source, without=(), saved_model_pb: bytes | None = None):
    """Copies `source` to `base/version` as an exporter does: written aside, then renamed.

    `without` leaves files out (a half-written version); `saved_model_pb` replaces that file.
    """
    base.mkdir(parents=True, exist_ok=True)
    aside = base / f".{version}.tmp"
    shutil.copytree(source, aside, ignore=shutil.ignore_patterns(*without))
    if saved_model_pb is not None:
        (aside / "saved_model.pb").write_bytes(saved_model_pb)
    aside.rename(base / str(version))
    return base / str(version)


def replace_file(path, data: bytes) -> None:
    """Writes a file atomically (aside, then renamed over it)."""
    aside = path.with_name(f".{path.name}.tmp")
    aside.write_bytes(data)
    os.replace(aside, path)


def _pair() -> dict:
    rng = np.random.default_rng(0)
    return {
        "query": rng.standard_normal((1, 6, FEATURE_DIM)).astype("float32"),
        "query_length": np.array([5], "int32"),
        "reference": rng.standard_normal((1, 30, FEATURE_DIM)).astype("float32"),
        "reference_length": np.array([28], "int32"),
    }


BODY = json.dumps({"inputs": {k: v.tolist() for k, v in _pair().items()}})


def predict(url: str, version: int | None = None):
    path = "/v1/models/reloc" + ("" if version is None else f"/versions/{version}")
    return request(url + path + ":predict", BODY)


def states(url: str) -> dict[int, str]:
    status, body = request(url + "/v1/models/reloc")
    assert status == 200, body
    return {int(v["version"]): v["state"] for v in body["model_version_status"]}


def version_status(url: str, version: int) -> dict:
    status, body = request(url + f"/v1/models/reloc/versions/{version}")
    assert status == 200, body
    [entry] = body["model_version_status"]
    return entry


def default_version(url: str) -> str:
    status, body = request(url + "/v1/models/reloc/metadata")
    assert status == 200, body
    return body["model_spec"]["version"]


def wait_for(condition, what: str, timeout: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_for_states(url: str, expected: dict[int, str]) -> None:
    last = {}

    def reached():
        last["states"] = states(url)
        return last["states"] == expected

    try:
        wait_for(reached, f"states {expected}")
    except AssertionError as error:
        raise AssertionError(f"{error}; last states {last.get('states')}") from None


class Clients:
    """Threads that call `:predict` (no version) in a loop and keep every status they get."""

    def __init__(self, url: str, count: int = 2):
        self.url = url
        self.statuses: list[int] = []
        self.errors: list = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            status, body = predict(self.url)
            self.statuses.append(status)
            if status != 200:
                self.errors.append(body)

    def stop(self) -> list[int]:
        self._stop.set()
        for thread in self._threads:
            thread.join(TIMEOUT_S)
        return self.statuses


@pytest.fixture
def start():
    """Starts servers that poll every POLL_S (warm-up off); shuts them down after the test."""
    started = []

    def start(configs, poll=POLL_S, warmup=False):
        manager = ModelManager(configs, BatchingParameters(), enable_model_warmup=warmup)
        manager.load()
        server = start_server(manager, port=0, host="127.0.0.1", file_system_poll_wait_seconds=poll)
        started.append((server, manager))
        return f"http://127.0.0.1:{server.port}", server, manager

    yield start
    for server, manager in started:
        server.shutdown()
        assert not server.polling
        manager.close()


def test_a_new_version_is_served_and_the_old_one_unloaded(start, exported, tmp_path):
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    url, server, _ = start([ModelConfig("reloc", str(base))])
    assert server.polling
    assert states(url) == {1: "AVAILABLE"}

    add_version(base, 2, exported)
    wait_for_states(url, {2: "AVAILABLE", 1: "END"})
    assert default_version(url) == "2"
    assert predict(url)[0] == 200
    assert predict(url, 2)[0] == 200
    status, body = predict(url, 1)
    assert status == 404 and "END" in body["error"]
    assert version_status(url, 1) == {
        "version": "1",
        "state": "END",
        "status": {"error_code": "OK", "error_message": ""},
    }


def test_a_version_is_served_only_once_warmed_up(start, exported, tmp_path, monkeypatch):
    """LOADING until its warm-up is done: requests without a version stay on the old one."""
    gate = threading.Event()
    warm_ups = []
    original = ServedVersion.warm_up

    def warm_up(self, *args, **kwargs):
        if self.version == 2:
            warm_ups.append("version 2 started")
            assert gate.wait(TIMEOUT_S)
        seconds = original(self, *args, **kwargs)
        warm_ups.append(f"version {self.version} done")
        return seconds

    monkeypatch.setattr(ServedVersion, "warm_up", warm_up)
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    url, _, manager = start([ModelConfig("reloc", str(base))], warmup=True)
    try:
        add_version(base, 2, exported)
        wait_for(lambda: "version 2 started" in warm_ups, "the warm-up of version 2")
        assert states(url) == {2: "LOADING", 1: "AVAILABLE"}
        assert default_version(url) == "1"
        assert predict(url)[0] == 200
        status, body = predict(url, 2)
        assert status == 404 and "LOADING" in body["error"]
    finally:
        gate.set()
    wait_for_states(url, {2: "AVAILABLE", 1: "END"})
    assert warm_ups == ["version 1 done", "version 2 started", "version 2 done"]
    assert manager.versions()["reloc"][2].warmup_seconds is not None
    assert default_version(url) == "2"


def test_a_half_written_version_is_ignored_until_complete(start, exported, tmp_path):
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    url, _, manager = start([ModelConfig("reloc", str(base))])
    partial = base / "2"
    shutil.copytree(exported, partial, ignore=shutil.ignore_patterns("saved_model.pb"))
    manager.poll()  # one whole poll (besides the server's) that saw version 2 unfinished
    assert states(url) == {1: "AVAILABLE"}
    assert predict(url)[0] == 200
    assert request(url + "/v1/models/reloc/versions/2")[0] == 404

    replace_file(partial / "saved_model.pb", (exported / "saved_model.pb").read_bytes())
    wait_for_states(url, {2: "AVAILABLE", 1: "END"})
    assert predict(url, 2)[0] == 200


def test_a_corrupt_version_is_logged_and_skipped(start, exported, tmp_path, caplog):
    """The old version serves on (every request 200); the fixed version loads on a later poll."""
    caplog.set_level(logging.INFO, logger="video_reloc.serving")
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    url, _, manager = start([ModelConfig("reloc", str(base))])
    clients = Clients(url)
    try:
        bad = add_version(base, 2, exported, saved_model_pb=b"not a SavedModel\x00\x01")
        manager.poll()
        wait_for(lambda: states(url).get(2) == "END", "version 2 to fail")

        def failures():
            return [
                r.getMessage()
                for r in caplog.records
                if r.levelno >= logging.ERROR and "version 2" in r.getMessage()
            ]

        [message] = failures()
        assert str(bad) in message and "still serving versions [1]" in message
        failed = version_status(url, 2)
        assert failed["state"] == "END"
        assert failed["status"]["error_code"] != "OK"
        assert str(bad) in failed["status"]["error_message"]
        assert states(url) == {2: "END", 1: "AVAILABLE"}
        assert default_version(url) == "1"
        assert predict(url)[0] == 200
        assert predict(url, 2)[0] == 404
        manager.poll()  # unchanged files: not tried again (nor logged again)
        assert len(failures()) == 1

        replace_file(bad / "saved_model.pb", (exported / "saved_model.pb").read_bytes())
        wait_for_states(url, {2: "AVAILABLE", 1: "END"})
        assert version_status(url, 2)["status"] == {"error_code": "OK", "error_message": ""}
    finally:
        statuses = clients.stop()
    assert statuses and set(statuses) == {200}, clients.errors[:3]


@pytest.mark.parametrize("policy", ["all", "latest"])
def test_a_removed_version_goes_away(start, exported, tmp_path, policy):
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    add_version(base, 2, exported)
    if policy == "all":
        url, _, _ = start([ModelConfig("reloc", str(base), num_latest=0)])
        assert states(url) == {2: "AVAILABLE", 1: "AVAILABLE"}
        removed, kept = 1, 2
    else:
        # Under `latest`, removing the served version rolls back to the one below.
        url, _, _ = start([ModelConfig("reloc", str(base))])
        assert states(url) == {2: "AVAILABLE"}
        removed, kept = 2, 1
    shutil.rmtree(base / str(removed))
    wait_for_states(url, {kept: "AVAILABLE", removed: "END"})
    assert predict(url, removed)[0] == 404
    assert request(url + f"/v1/models/reloc/versions/{removed}/metadata")[0] == 404
    assert predict(url, kept)[0] == 200
    assert predict(url)[0] == 200
    assert default_version(url) == str(kept)


def test_a_base_path_without_a_version_serves_the_first_that_appears(exported, tmp_path):
    """Started on an empty base path (only a half-written `.1.tmp`): not available, then served."""
    base = tmp_path / "reloc"
    aside = base / ".1.tmp"
    shutil.copytree(exported, aside, ignore=shutil.ignore_patterns("saved_model.pb"))
    manager = ModelManager([ModelConfig("reloc", str(base))], enable_model_warmup=False)
    with pytest.raises(FileNotFoundError, match="no numeric version folder"):
        manager.load()  # as `load_models` does: versions required
    manager = ModelManager([ModelConfig("reloc", str(base))], enable_model_warmup=False)
    manager.load(require_versions=False)
    server = start_server(
        manager, port=0, host="127.0.0.1", grpc_port=0, file_system_poll_wait_seconds=POLL_S
    )
    url = f"http://127.0.0.1:{server.port}"
    try:
        for path in ("", "/metadata"):
            status, body = request(url + "/v1/models/reloc" + path)
            assert status == 404
            assert (
                f"'reloc' has no version available yet: waiting for a version folder under {base}"
                in body["error"]
            )
        status, body = predict(url)
        assert status == 404 and "no version available yet" in body["error"]
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = "reloc"
            with pytest.raises(grpc.RpcError) as error:
                model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request)
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
        manager.poll()
        assert request(url + "/v1/models/reloc")[0] == 404  # `.1.tmp` is no version
        shutil.copy(exported / "saved_model.pb", aside / "saved_model.pb")
        aside.rename(base / "1")
        wait_for(lambda: predict(url)[0] == 200, "version 1 to be served")
        assert states(url) == {1: "AVAILABLE"}
    finally:
        server.shutdown()
        manager.close()


@pytest.mark.parametrize("poll", [0, -1])
def test_poll_zero_or_less_disables_polling(start, exported, tmp_path, poll):
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    url, server, manager = start([ModelConfig("reloc", str(base))], poll=poll)
    assert not server.polling
    assert not any(t.name == "model-version-poller" for t in threading.enumerate())
    add_version(base, 2, exported)
    time.sleep(20 * POLL_S)  # what polling every POLL_S would have seen
    assert states(url) == {1: "AVAILABLE"}
    assert predict(url)[0] == 200
    manager.poll()  # the same version is picked up by a poll
    assert states(url) == {2: "AVAILABLE", 1: "END"}


def test_loaded_versions_cannot_be_polled(exported, tmp_path):
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    models = load_models([ModelConfig("reloc", str(base))], enable_model_warmup=False)
    with pytest.raises(ValueError, match="ModelManager"):
        start_server(models, port=0, host="127.0.0.1", file_system_poll_wait_seconds=1)


def test_requests_during_switches_all_succeed(start, exported, tmp_path):
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    url, _, _ = start([ModelConfig("reloc", str(base))])
    clients = Clients(url)
    try:
        add_version(base, 2, exported)
        wait_for_states(url, {2: "AVAILABLE", 1: "END"})
        add_version(base, 3, exported)
        wait_for_states(url, {3: "AVAILABLE", 2: "END", 1: "END"})
        shutil.rmtree(base / "3")  # back to version 2
        wait_for_states(url, {3: "END", 2: "AVAILABLE", 1: "END"})
    finally:
        statuses = clients.stop()
    assert len(statuses) > 10 and set(statuses) == {200}, clients.errors[:3]


def test_unloading_waits_for_requests_in_flight(exported, tmp_path):
    """A version no longer asked for stops taking requests but answers those it holds."""
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    manager = ModelManager([ModelConfig("reloc", str(base))], enable_model_warmup=False)
    manager.load()

    def current() -> dict[int, str]:
        return {int(v["version"]): v["state"] for v in manager.status("reloc")}

    try:
        with manager.acquire("reloc") as old:
            assert old.version == 1
            add_version(base, 2, exported)
            manager.poll()
            assert current() == {2: "AVAILABLE", 1: "UNLOADING"}
            outputs = old.predict("serving_default", _pair(), TIMEOUT_S)
            assert outputs["probabilities"].shape == (1, 30, 4)
            with manager.acquire("reloc") as new:
                assert new.version == 2
            with (
                pytest.raises(ServingError, match="UNLOADING") as error,
                manager.acquire("reloc", "1"),
            ):
                pass
            assert error.value.status == 404
        assert current() == {2: "AVAILABLE", 1: "END"}
    finally:
        manager.close()


def test_shutdown_abandons_a_warm_up_in_progress(exported, tmp_path, monkeypatch):
    """The poller stops at the next warm-up request: shutdown does not wait for the load."""
    loading = threading.Event()
    original = ServedVersion.warm_up

    def warm_up(self, requests, source="", should_stop=None):
        if self.version == 2:
            loading.set()
            wait_for(should_stop, "the stop")
        return original(self, requests, source, should_stop=should_stop)

    monkeypatch.setattr(ServedVersion, "warm_up", warm_up)
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    manager = ModelManager([ModelConfig("reloc", str(base))], enable_model_warmup=True)
    manager.load()
    server = start_server(manager, port=0, host="127.0.0.1", file_system_poll_wait_seconds=POLL_S)
    try:
        add_version(base, 2, exported)
        assert loading.wait(TIMEOUT_S)
    finally:
        server.shutdown()
    try:
        assert not server.polling
        states = {int(v["version"]): v["state"] for v in manager.status("reloc")}
        assert states == {2: "END", 1: "AVAILABLE"}
        assert manager.status("reloc", 2)[0]["status"]["error_code"] == "OK"
    finally:
        manager.close()


def test_shutdown_copes_with_a_closed_wake_up_pipe(exported, tmp_path):
    """A server whose I/O loop lost its wake-up pipe still shuts down, and its loop ends."""
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    manager = ModelManager([ModelConfig("reloc", str(base))], enable_model_warmup=False)
    manager.load()
    server = start_server(manager, port=0, host="127.0.0.1", file_system_poll_wait_seconds=0)
    try:
        url = f"http://127.0.0.1:{server.port}"
        assert predict(url)[0] == 200
        loop = server._rest_thread
        os.close(server._rest.trigger.trigger)  # as a stray close elsewhere in the process does
        server.shutdown()
        assert not loop.is_alive()
    finally:
        manager.close()


@pytest.mark.slow
def test_serve_binary_polls(exported, tmp_path):
    """`video-reloc-serve --file_system_poll_wait_seconds` serves a version exported later."""
    base = tmp_path / "reloc"
    add_version(base, 1, exported)
    port = free_ports()[0]
    code = (
        "import sys\n"
        "from video_reloc.cli import serve\n"
        "sys.argv = ['serve', '--rest_api_host=127.0.0.1', '--model_name=reloc', '--port=0', "
        f"'--rest_api_port={port}', '--model_base_path={base}', "
        "'--file_system_poll_wait_seconds=0.2', '--noenable_model_warmup']\n"
        "serve.run()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def started():
            assert process.poll() is None, process.stdout.read()
            try:
                return predict(url)[0] == 200  # the APIs answer (404) while it loads
            except (urllib.error.URLError, ConnectionError):
                return False

        wait_for(started, "the server to start")
        assert states(url) == {1: "AVAILABLE"}
        add_version(base, 2, exported)
        wait_for_states(url, {2: "AVAILABLE", 1: "END"})
        assert predict(url)[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
