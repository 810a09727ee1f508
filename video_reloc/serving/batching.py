"""Request batching: a queue per signature whose workers run merged, padded requests.

Inputs `x` with an `x_length` input have steps on axis 1; merged requests are zero-padded to the
longest and the outputs cut back to each request's rows and steps (`OUTPUT_STEP_AXES`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

from video_reloc.serving.config import BatchingParameters
from video_reloc.serving.errors import ServingError

# Inputs `x_length` count the valid steps (axis 1) of input `x`; outputs' step axes follow the
# inputs named here, so merged and padded requests can be cut back to their own lengths.
LENGTH_SUFFIX = "_length"
OUTPUT_STEP_AXES: dict[str, tuple[str, ...]] = {
    "probabilities": ("reference",),
    "attention": ("reference", "query"),
}


class Batcher:
    """A queue per model version whose worker threads run requests, merged into batches.

    Requests whose rows fit within `max_batch_size` are merged: inputs with steps (axis 1 of an
    input `x` that has an `x_length`) are zero-padded to the longest, and each request gets its
    outputs cut back to its own rows and steps.
    """

    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
        parameters: BatchingParameters,
        name: str,
        on_batch: Callable[[int], None] | None = None,
    ):
        self._run = run
        self._on_batch = on_batch
        self._parameters = parameters
        self._pending: collections.deque = collections.deque()
        self._pending_rows = 0
        self._condition = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batcher-{name}-{i}", daemon=True)
            for i in range(parameters.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: dict[str, np.ndarray]) -> concurrent.futures.Future:
        """Queues one request; its future gives the outputs (numpy) or raises."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        rows = len(next(iter(inputs.values())))
        limit = self._parameters.max_batch_size * max(self._parameters.max_enqueued_batches, 1)
        with self._condition:
            if self._closed:
                raise ServingError("the server is shutting down", "UNAVAILABLE")
            if self._pending and self._pending_rows + rows > limit:
                raise ServingError(
                    f"the queue is full ({self._pending_rows} rows); retry", "UNAVAILABLE"
                )
            self._pending.append((inputs, rows, future))
            self._pending_rows += rows
            self._condition.notify()
        return future

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _take_batch(self) -> list[tuple[dict[str, np.ndarray], int, concurrent.futures.Future]]:
        parameters = self._parameters
        with self._condition:
            while not self._pending and not self._closed:
                self._condition.wait()
            if not self._pending:
                return []
            batch, rows = [], 0
            deadline = time.monotonic() + parameters.batch_timeout_micros / 1e6
            while True:
                while self._pending and (
                    not batch or rows + self._pending[0][1] <= parameters.max_batch_size
                ):
                    item = self._pending.popleft()
                    self._pending_rows -= item[1]
                    batch.append(item)
                    rows += item[1]
                remaining = deadline - time.monotonic()
                full = rows >= parameters.max_batch_size or self._pending
                if full or remaining <= 0 or self._closed:
                    return batch
                self._condition.wait(remaining)

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            batch = [item for item in batch if item[2].set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                merged = merge_padded([inputs for inputs, _, _ in batch])
                if self._on_batch is not None:
                    self._on_batch(sum(rows for _, rows, _ in batch))
                results = split_batch(self._run(merged), batch)
            except Exception as error:  # noqa: BLE001 - handed to the waiting requests
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, _, future), result in zip(batch, results):
                future.set_result(result)


def step_input_names(inputs: Mapping[str, np.ndarray]) -> list[str]:
    """Inputs whose axis 1 counts steps: those with a `<name>_length` input."""
    return [name for name in inputs if f"{name}{LENGTH_SUFFIX}" in inputs]


def merge_padded(requests: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenates requests along the batch, zero-padding step axes to the longest."""
    if len(requests) == 1:
        return requests[0]
    merged = {}
    for name in requests[0]:
        arrays = [request[name] for request in requests]
        if name in step_input_names(requests[0]):
            steps = max(array.shape[1] for array in arrays)
            arrays = [
                np.pad(array, [(0, 0), (0, steps - array.shape[1])] + [(0, 0)] * (array.ndim - 2))
                for array in arrays
            ]
        merged[name] = np.concatenate(arrays, axis=0)
    return merged


def split_batch(outputs: dict[str, np.ndarray], batch: list) -> list[dict[str, np.ndarray]]:
    """Cuts merged outputs back into each request's rows and step counts."""
    results, offset = [], 0
    for inputs, rows, _ in batch:
        result = {}
        for name, value in outputs.items():
            value = value[offset : offset + rows]
            for axis, source in enumerate(OUTPUT_STEP_AXES.get(name, ()), start=1):
                if source in inputs:
                    value = value[(slice(None),) * axis + (slice(0, inputs[source].shape[1]),)]
            result[name] = value
        results.append(result)
        offset += rows
    return results
