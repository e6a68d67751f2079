"""One model version's serving engine, alive exactly as long as the version.

The store's loader (`RunnerFactory`) makes a `ModelRunner` when it loads a version: the ONNX
Runtime model, warmed up; the version's settings (server defaults under its config.yaml); how its
runs are scheduled (a `Batcher`, or `DirectRuns` for a model that does not batch); its metrics
series. The store calls `configure` when config.yaml changes and `close` when the version is
unloaded (removed from disk and its sessions gone, or the server stopping): the scheduler lets
what is queued finish and ends its task and threads, and the metrics series go. Nothing is cached
elsewhere by object identity, so nothing of a version outlives its runner.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from seqserve.batching.batcher import Batcher, BatchStats, Feeds, batchable, long_run
from seqserve.batching.direct import DirectRuns
from seqserve.config import ModelDefaults, Settings
from seqserve.errors import ModelNotReady, QueueFull
from seqserve.metrics import Metrics
from seqserve.runtime.providers import resolve_providers
from seqserve.runtime.session import OrtModel, session_options
from seqserve.sessions.stores import SessionLimits
from seqserve.store.model_config import ModelConfig, ModelSettings
from seqserve.store.signature import Signature

log = logging.getLogger(__name__)

Scheduler = Batcher | DirectRuns


class ModelRunner:
    def __init__(
        self, name: str, version: int, model: OrtModel, defaults: ModelDefaults, config: ModelConfig, metrics: Metrics
    ) -> None:
        self.name, self.version, self.model = name, version, model
        self._defaults = defaults
        self._metrics = metrics
        self._labels = (name, str(version))
        self.series = metrics.of(*self._labels)
        self.statistics = self.series.statistics
        if model.placement is not None:
            metrics.placement(name, str(version), model.placement.counts())
        self._scheduler: Scheduler | None = None
        self._closed = False
        self._time_inputs = [t.name for t in model.signature.inputs if len(t.shape) > 1 and t.shape[1] < 0]
        self._in_flight = 0  # requests admitted to the scheduler and not answered yet (`max_queue_size`)
        self.configure(config)

    @property
    def signature(self) -> Signature:
        return self.model.signature

    def configure(self, config: ModelConfig) -> None:
        """Applies the model's (new) config.yaml: to the next runs, and to sessions' next saves."""
        self.settings = ModelSettings.resolve(self._defaults, config)
        s = self.settings
        self.limits = SessionLimits(s.max_sessions, s.max_session_bytes, s.max_sequence_idle, history=s.session_history)
        old = self._scheduler
        batched = s.batching and batchable(self.signature)
        compute_thread = s.batch_compute == "thread" or (s.batch_compute == "auto" and self.model.on_cuda)
        if batched and isinstance(old, Batcher) and old.compute_thread == compute_thread:
            old.configure(s.max_batch_size, s.max_queue_delay, s.sequence_batch_delay)
            return
        if not batched and isinstance(old, DirectRuns):
            old.inline_max_elements = s.inline_max_elements
            return
        self._scheduler = self._batcher(compute_thread) if batched else self._direct()
        if old is not None:
            old.close()  # what it holds still runs; new requests go to its successor

    def _batcher(self, compute_thread: bool) -> Batcher:
        compute_seconds, batch_size, statistics = self.series.compute_seconds, self.series.batch_size, self.statistics

        def observe(requests: int, samples: int, seconds: float, waited: float) -> None:
            compute_seconds.observe(seconds)
            batch_size.observe(samples)
            statistics.ran(requests, waited, seconds)

        s = self.settings
        return Batcher(
            self._run,
            compute_thread,
            max_batch_size=s.max_batch_size,
            max_queue_delay=s.max_queue_delay,
            sequence_batch_delay=s.sequence_batch_delay,
            on_batch=observe,
            name=f"batch-{self.name}",
            timesteps=self._timesteps,
        )

    def _direct(self) -> DirectRuns:
        queue_seconds, compute_seconds = self.series.queue_seconds, self.series.compute_seconds
        statistics = self.statistics

        def observe(waited: float, computing: float) -> None:
            if waited:
                queue_seconds.observe(waited)
            compute_seconds.observe(computing)
            statistics.ran(1, waited, computing)

        return DirectRuns(
            self._run,
            self.settings.inline_max_elements,
            observe,
            name=f"compute-{self.name}",
            timesteps=self._timesteps,
        )

    def _run(self, feeds: Feeds) -> Feeds:
        # A long run hands the memory it grew ONNX Runtime's arena by back when it ends.
        began = time.perf_counter()
        outputs = self.model.run(feeds, release_memory=long_run(feeds, self._timesteps))
        self.statistics.executed(_samples(feeds), time.perf_counter() - began)
        return outputs

    def _timesteps(self, feeds: Feeds) -> int:
        """The timesteps a request carries: the longest second dimension among inputs whose signature
        leaves it free (a sequence input); 1 for a model without one. What a run's time grows with."""
        return max((int(feeds[name].shape[1]) for name in self._time_inputs if name in feeds), default=1)

    async def run(self, feeds: Feeds, session: str | None = None, ends: bool = False) -> Feeds:
        """Runs the model on `feeds` (inputs and states). `session` and `ends` tell a batcher which
        sequence a step belongs to and whether it is its last."""
        scheduler = self._scheduler
        if self._closed or scheduler is None:
            raise ModelNotReady(f"model '{self.name}' version {self.version} was unloaded; send the request again")
        bound = self.settings.max_queue_size
        if self._in_flight >= bound:
            raise QueueFull(
                f"model '{self.name}' has {self._in_flight} requests waiting or running, its max_queue_size; "
                "send the request again shortly",
                retry_after=1.0,
            )
        # Counted on the event loop only, so no lock: admitted here, released when the run answers.
        self._in_flight += 1
        try:
            outputs = await scheduler.run(feeds, session, ends)
        finally:
            self._in_flight -= 1
        self.statistics.inferred(_samples(feeds))
        return outputs

    def zero_states(self, batch_size: int) -> dict[str, np.ndarray]:
        return self.model.zero_states(batch_size)

    @property
    def batcher(self) -> Batcher | None:
        return self._scheduler if isinstance(self._scheduler, Batcher) else None

    @property
    def batch_stats(self) -> BatchStats | None:
        batcher = self.batcher
        return batcher.stats if batcher is not None else None

    def close(self) -> None:
        """Ends the version's serving: queued runs finish, then its task and threads end. Safe from
        any thread, and more than once."""
        if self._closed:
            return
        self._closed = True
        if self._scheduler is not None:
            self._scheduler.close()
        self._metrics.forget(*self._labels)
        log.info("model %s version %d unloaded", self.name, self.version)


def _samples(feeds: Feeds) -> int:
    """The batch rows of a run: the first dimension of its tensors (1 for a model without one)."""
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


class RunnerFactory:
    """The store's loader: loads, warms up and configures the runner of each version it finds."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.providers = resolve_providers(settings.device, settings.cuda_tf32)

    def __call__(self, name: str, version: int, path: Path, signature: Signature, config: ModelConfig) -> ModelRunner:
        s = self.settings
        options = session_options(s.intra_op_threads, s.inter_op_threads, s.allow_spinning)
        model = OrtModel(path, signature, self.providers, options, first_run=s.warmup)
        where = model.placement.summary() if model.placement else "not run at load (warm-up off)"
        log.info("model %s version %d: nodes %s", name, version, where)
        return ModelRunner(name, version, model, s, config, self.metrics)
