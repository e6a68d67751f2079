"""Prometheus metrics, in a registry of their own so several servers can live in one test process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from seqserve.sessions.stores import StoreEvents
from seqserve.statistics import VersionStatistics

# Buckets from 100 us: a single streamed step on the CPU takes a fraction of a millisecond.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


@dataclass(frozen=True)
class VersionMetrics:
    requests: Any
    request_seconds: Any
    queue_seconds: Any
    compute_seconds: Any
    batch_size: Any
    # Triton's statistics extension: plain counters beside the Prometheus series, gone with them.
    statistics: VersionStatistics = field(default_factory=VersionStatistics)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "version"]
        self.requests = Counter(
            "seqserve_inference_requests", "Inference requests received.", labels, registry=self.registry
        )
        self.failures = Counter(
            "seqserve_inference_failures",
            "Inference requests that failed, by error class.",
            [*labels, "reason"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "seqserve_inference_request_seconds",
            "Time in the data plane per request, queueing and compute included.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "seqserve_inference_queue_seconds",
            "Time a request waited for a compute thread.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.compute_seconds = Histogram(
            "seqserve_inference_compute_seconds",
            "Time ONNX Runtime spent on a request.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.batch_size = Histogram(
            "seqserve_batch_size",
            "Samples per ONNX Runtime run formed by the batcher.",
            labels,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=self.registry,
        )
        self.nodes = Gauge(
            "seqserve_model_nodes",
            "Nodes of a model version by the execution provider ONNX Runtime ran them on (its warm-up, profiled).",
            [*labels, "provider", "op"],
            registry=self.registry,
        )
        self.store_round_trips = Counter(
            "seqserve_session_store_round_trips",
            "Round trips to the session store (Redis), per shard; one carries the calls of one turn of the event loop.",
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "seqserve_session_store_seconds",
            "Time of one pipelined round trip to the session store.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.session_conflicts = Counter(
            "seqserve_session_conflicts",
            "Saves that lost their compare-and-set: another writer advanced the session first.",
            registry=self.registry,
        )
        self.session_reloads = Counter(
            "seqserve_session_reloads",
            "Steps applied again to the stored session after this replica's copy of it turned out stale.",
            registry=self.registry,
        )
        self._versions: dict[tuple[str, str], VersionMetrics] = {}
        self._placed: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._failure_reasons: dict[tuple[str, str], set[str]] = {}

    def of(self, model: str, version: str) -> VersionMetrics:
        """The labelled series of one model version, looked up once (labels() costs microseconds per call)."""
        key = (model, version)
        found = self._versions.get(key)
        if found is None:
            found = self._versions[key] = VersionMetrics(
                requests=self.requests.labels(model, version),
                request_seconds=self.request_seconds.labels(model, version),
                queue_seconds=self.queue_seconds.labels(model, version),
                compute_seconds=self.compute_seconds.labels(model, version),
                batch_size=self.batch_size.labels(model, version),
            )
        return found

    def forget(self, model: str, version: str) -> None:
        """Drops every series of a model version that was unloaded, so versions that come and go do
        not pile up series (and memory) in the exposition."""
        self._versions.pop((model, version), None)
        for family in (self.requests, self.request_seconds, self.queue_seconds, self.compute_seconds, self.batch_size):
            with contextlib.suppress(KeyError):
                family.remove(model, version)
        for reason in self._failure_reasons.pop((model, version), set()):
            self.failures.remove(model, version, reason)
        for provider, op in self._placed.pop((model, version), []):
            self.nodes.remove(model, version, provider, op)

    def placement(self, model: str, version: str, counts: Mapping[tuple[str, str], int]) -> None:
        """Where a model version's nodes run: (provider, op type) -> count."""
        self._placed[(model, version)] = list(counts)
        for (provider, op), n in counts.items():
            self.nodes.labels(model, version, provider, op).set(n)

    def failed(self, model: str, version: str, reason: str) -> None:
        """Counts a failed request of a model version, by error class."""
        self._failure_reasons.setdefault((model, version), set()).add(reason)
        self.failures.labels(model, version, reason).inc()

    def watch_sessions(self, store: Any) -> None:
        """Reports the session store's counts at scrape time (stores keep them; nothing to keep in
        sync), and its round trips and conflicts as they happen."""
        self.registry.register(_SessionCollector(store))
        round_trips, seconds, conflicts = self.store_round_trips, self.store_seconds, self.session_conflicts

        def round_trip(took: float, calls: int, shards: int) -> None:
            round_trips.inc(shards)
            seconds.observe(took)

        store.events = StoreEvents(round_trip=round_trip, conflict=conflicts.inc)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _SessionCollector(Collector):
    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[Any]:
        active = getattr(self.store, "active", None)
        if active is not None:
            yield GaugeMetricFamily("seqserve_sessions_active", "Sessions holding state.", value=active)
        for name, attribute, text in (
            ("seqserve_session_evictions", "evictions", "Sessions evicted to make room (least recently used)."),
            ("seqserve_session_expiries", "expiries", "Sessions dropped after their idle timeout."),
        ):
            value = getattr(self.store, attribute, None)
            if value is not None:
                yield CounterMetricFamily(name, text, value=value)
