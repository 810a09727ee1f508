"""Prometheus metrics of a server (prometheus-client), in a registry of its own.

Served in Prometheus' text format at the path `--monitoring_config_file` names
(`prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }`):

- `video_reloc_serving_requests_total{model_name, model_version, api, entrypoint, status}`:
  requests by model, version (empty when none was resolved), API (`predict`,
  `get_model_metadata`, `get_model_status`), entry point (`REST`, `GRPC`) and status (`OK` or
  the canonical error code, such as `INVALID_ARGUMENT`, `NOT_FOUND`).
- `video_reloc_serving_request_latency_seconds{model_name, api, entrypoint}`: a histogram of
  the time from a request's arrival (its body read) to its answer.
- `video_reloc_serving_batch_size{model_name, model_version}`: a histogram of the rows of each
  batch run (one request, or several merged by batching).
- `video_reloc_serving_model_version_state{model_name, model_version, state}`: 1 for the state
  each version is in now (`LOADING`, `AVAILABLE`, `UNLOADING`, `END`), read when scraped.

A model name the server does not serve is counted as `model_name=""`, so clients cannot grow
the label sets without bound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from video_reloc.serving.errors import ServingError
from video_reloc.serving.manager import ModelManager

PREFIX = "video_reloc_serving"
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclasses.dataclass
class Call:
    """What a handler learns about its request: the model version that answered, the status."""

    version: str = ""
    status: str = "OK"


class _VersionStates:
    """A collector reading the manager's version states at each scrape."""

    def __init__(self, manager: ModelManager):
        self.manager = manager

    def collect(self):
        family = GaugeMetricFamily(
            f"{PREFIX}_model_version_state",
            "1 for the state each model version is in (LOADING, AVAILABLE, UNLOADING, END).",
            labels=["model_name", "model_version", "state"],
        )
        for name, versions in sorted(self.manager.states().items()):
            for version, state in sorted(versions.items()):
                family.add_metric([name, str(version), state], 1)
        yield family


class Metrics:
    """A server's metrics over its `ModelManager` (whose batches it counts)."""

    def __init__(self, manager: ModelManager):
        self.manager = manager
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests by model, version, API, entry point and status.",
            ["model_name", "model_version", "api", "entrypoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_latency_seconds",
            "Time from a request's arrival to its answer.",
            ["model_name", "api", "entrypoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "Rows of each batch run.",
            ["model_name", "model_version"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_VersionStates(manager))
        manager.on_batch = self.observe_batch

    def observe_batch(self, name: str, version: int, rows: int) -> None:
        self.batch_size.labels(name, str(version)).observe(rows)

    @contextlib.contextmanager
    def track(self, api: str, entrypoint: str, model_name: str) -> Iterator[Call]:
        """Counts one request and its latency; the handler sets `call.version`.

        A `ServingError` raised inside sets the status to its code (others to `INTERNAL`) and
        goes on.
        """
        call = Call()
        start = time.perf_counter()
        try:
            yield call
        except ServingError as error:
            call.status = error.code
            raise
        except Exception:
            call.status = "INTERNAL"
            raise
        finally:
            name = model_name if self.manager.has_model(model_name) else ""
            self.requests.labels(name, call.version, api, entrypoint, call.status).inc()
            self.latency.labels(name, api, entrypoint).observe(time.perf_counter() - start)
