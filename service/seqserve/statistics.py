"""Triton's statistics extension: what one model version has done since it loaded.

Plain counters, bumped by the data plane (a request's outcome and its time end to end), by the
runner's schedulers (each request's wait and compute) and by the runner itself (each ONNX Runtime
execution and its batch size). Some of those calls come from compute threads, so every change
takes one uncontended lock: a few tens of nanoseconds, no allocation. `triton` renders them in
Triton's JSON shape (`GET /v2/models/{m}/stats`); gRPC parses that same dict into its message.

ONNX Runtime's run is timed whole: preparing its inputs and copying its outputs are inside
`compute_infer`. `compute_input` and `compute_output` count the same runs with 0 ns, rather than
being left out: perf_analyzer refuses statistics whose three compute counts differ.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seqserve.store.model_store import ModelStore

_NS = 1_000_000_000


class _Duration:
    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * _NS)

    def triton(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}

    def untimed(self) -> dict[str, int]:
        """The same count with no time of its own: for the parts of a run timed within it."""
        return {"count": self.count, "ns": 0}


class VersionStatistics:
    """Counts and cumulative durations of one model version, in Triton's terms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inference_count = 0  # samples (batch rows) of requests the model answered
        self.execution_count = 0  # ONNX Runtime runs, each of one request or of a batch of them
        self.last_inference_ms = 0  # when the last inference answered, milliseconds since the epoch
        self.success = _Duration()  # requests answered, time in the data plane
        self.fail = _Duration()  # requests refused or failed, time in the data plane
        self.queue = _Duration()  # requests run, time waiting for their batch or a thread
        self.compute = _Duration()  # requests run, time of the run that carried them
        self.batches: dict[int, _Duration] = {}  # samples per execution -> executions, their run time

    def succeeded(self, seconds: float) -> None:
        with self._lock:
            self.success.add(seconds)

    def failed(self, seconds: float) -> None:
        with self._lock:
            self.fail.add(seconds)

    def inferred(self, samples: int) -> None:
        """A request's run answered with `samples` rows."""
        now = time.time_ns() // 1_000_000
        with self._lock:
            self.inference_count += samples
            self.last_inference_ms = now

    def ran(self, requests: int, waited: float, seconds: float) -> None:
        """`requests` ran in one execution of `seconds`, after waiting `waited` seconds in all."""
        with self._lock:
            self.queue.add(waited, requests)
            # Each request of a batch took the whole run, as Triton counts it.
            self.compute.add(seconds * requests, requests)

    def executed(self, samples: int, seconds: float) -> None:
        """One ONNX Runtime execution over `samples` rows took `seconds`."""
        with self._lock:
            self.execution_count += 1
            batch = self.batches.get(samples)
            if batch is None:
                batch = self.batches[samples] = _Duration()
            batch.add(seconds)

    def triton(self, name: str, version: str) -> dict[str, Any]:
        """One entry of Triton's `model_stats`."""
        with self._lock:
            return {
                "name": name,
                "version": version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": self.success.triton(),
                    "fail": self.fail.triton(),
                    "queue": self.queue.triton(),
                    "compute_input": self.compute.untimed(),
                    "compute_infer": self.compute.triton(),
                    "compute_output": self.compute.untimed(),
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": batch.untimed(),
                        "compute_infer": batch.triton(),
                        "compute_output": batch.untimed(),
                    }
                    for size, batch in sorted(self.batches.items())
                ],
            }


def model_statistics(store: ModelStore, name: str = "", version: str = "") -> dict[str, Any]:
    """Triton's statistics answer: every ready version of every model, of one model, or one version.

    An unknown model or version is ModelNotFound (404); a known one that cannot serve, ModelNotReady."""
    if not name:
        versions = [mv for model in store.names() for mv in store.versions(model) if mv.ready]
    elif version:
        versions = [store.get_ready(name, version)]
    else:
        versions = [mv for mv in store.versions(name) if mv.ready] or [store.get_ready(name)]
    return {"model_stats": [mv.runner.statistics.triton(mv.name, str(mv.version)) for mv in versions]}
