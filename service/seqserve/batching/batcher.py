"""The batcher: concurrent runs of one model version become one ORT run over the stacked batch.

Each run is queued with its own future. One task per model takes what is waiting and closes the
batch when it holds `max_batch_size` samples or its wait is over. It waits `max_queue_delay` after
its first run arrived for more stateless requests (Triton's dynamic batching delay, 0 by default),
and up to `sequence_batch_delay` for the next steps of the sessions that are streaming (queued a
step in the last ACTIVE_WINDOW seconds), stopping as soon as they are all in. So a lone stream never
waits, while many streams wait the moment it takes them all to come back, which forms full batches;
only a stream that stops without ending costs its neighbours the delay, for ACTIVE_WINDOW at most.

The batch is grouped into runs whose tensors agree on every dimension but the batch; each group's
inputs and recurrent states are concatenated along the batch axis, run by ONNX Runtime once, and
its outputs and new states sliced back onto the futures. A failed run is run again in halves until
the requests that fail are alone, so each fails with its own error and the others succeed.

Where the run happens is the caller's choice: on a compute thread of the batcher's own, so the
event loop keeps serving the network while ORT works, or on the event loop itself. On a machine
with few cores the second is faster: handing each batch to a thread and back costs a thread switch
and GIL hand-offs both ways, while the overlap it buys needs a free core (bench/README.md).

A batcher lives as long as its model version's runner: `close()` (from any thread) refuses new
runs, lets what is queued run, then ends its task and its thread. Nothing is left pending.

Steps of one session never meet in a batch: the session manager holds a session while its step
runs, so at most one of its steps is ever queued. Stateless requests and steps of different
sessions mix freely; a sample's result does not depend on its neighbours (every op in our graphs
works per sample), which the tests check to 1e-6.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from seqserve.errors import ModelNotReady
from seqserve.store.signature import Signature

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], Feeds]
# How many timesteps a request's feeds carry (1 for a model without a time axis).
TimestepsFn = Callable[[Feeds], int]

# A run longer than this many timesteps, or holding more elements, is long: it runs on a thread of
# its own, so that neither the event loop (health probes, other clients) nor the batches after it
# wait for it. Streamed steps (one timestep, or a few) stay where `compute_thread` says.
LONG_RUN_TIMESTEPS = 16
LONG_RUN_ELEMENTS = 1 << 20
# Long runs of one model version at once; more wait for a thread (the queue is bounded by the
# runner's max_queue_size).
LONG_RUN_THREADS = 2

# A session counts as streaming, and a batch waits (up to sequence_batch_delay) for its next step, while
# its last step is at most this old. A slower client is not waited for; nor is one that went away
# without ending its sequence, for longer than this.
ACTIVE_WINDOW = 0.1


def long_run(feeds: Feeds, timesteps: TimestepsFn | None) -> bool:
    """Whether a run over `feeds` is long (LONG_RUN_TIMESTEPS, LONG_RUN_ELEMENTS)."""
    if timesteps is not None and timesteps(feeds) > LONG_RUN_TIMESTEPS:
        return True
    return sum(value.size for value in feeds.values()) > LONG_RUN_ELEMENTS


def batchable(signature: Signature) -> bool:
    """Batching needs the batch axis first and free on every input, output and state."""
    shapes = [t.shape for t in (*signature.inputs, *signature.outputs)] + [s.shape for s in signature.states]
    return all(len(shape) > 0 and shape[0] < 0 for shape in shapes)


class _Pending:
    """A queued run. Runs of equal `shape_key` (every tensor's name, dtype and non-batch dimensions)
    can be concatenated along the batch axis."""

    __slots__ = ("feeds", "size", "future", "shape_key", "session", "ends", "queued", "long")

    def __init__(
        self, feeds: Feeds, future: asyncio.Future[Feeds], session: str | None, ends: bool, long: bool
    ) -> None:
        self.feeds, self.future, self.session, self.ends, self.long = feeds, future, session, ends, long
        self.size = int(next(iter(feeds.values())).shape[0])
        self.shape_key = tuple((name, value.shape[1:], value.dtype) for name, value in feeds.items())
        self.queued = time.perf_counter()


@dataclass
class BatchStats:
    """What the batcher has done, for metrics and benchmarks."""

    runs: int = 0
    samples: int = 0
    requests: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # samples per run -> how many runs

    def record(self, requests: int, samples: int) -> None:
        self.runs += 1
        self.requests += requests
        self.samples += samples
        self.sizes[samples] = self.sizes.get(samples, 0) + 1


class Batcher:
    def __init__(
        self,
        run: RunFn,
        compute_thread: bool = False,
        max_batch_size: int = 64,
        max_queue_delay: float = 0.0,
        sequence_batch_delay: float = 0.0,
        # (requests, samples, seconds of the run, seconds the requests waited for it in all) per run
        on_batch: Callable[[int, int, float, float], None] | None = None,
        name: str = "batch",
        timesteps: TimestepsFn | None = None,
    ) -> None:
        self._run = run
        self._name = name
        self._timesteps = timesteps
        self._long_executor: ThreadPoolExecutor | None = None  # made on the first long run
        self._long_runs: set[asyncio.Task[None]] = set()
        # One compute thread: ORT runs one batch while the event loop gathers the next.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"seqserve-{name}") if compute_thread else None
        self.configure(max_batch_size, max_queue_delay, sequence_batch_delay)
        self._on_batch = on_batch
        self._closed = False
        self._waiting: deque[_Pending] = deque()
        self._held: _Pending | None = None  # too big to join the last batch: leads the next one
        self._wakeup: asyncio.Future[None] | None = None  # set while the collector waits for arrivals
        self._wake_when = 1  # ... for this many waiting runs
        # session -> when its last step was queued, least recent first (so forgetting is cheap)
        self._streaming: OrderedDict[str, float] = OrderedDict()
        self._idle = False  # the collector waits for a first run
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = BatchStats()

    def configure(self, max_batch_size: int, max_queue_delay: float, sequence_batch_delay: float) -> None:
        """New bounds for the next batches (a model's config.yaml changed)."""
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self.sequence_batch_delay = sequence_batch_delay

    @property
    def compute_thread(self) -> bool:
        return self._executor is not None

    async def run(self, feeds: Feeds, session: str | None = None, ends: bool = False) -> Feeds:
        """Runs `feeds` (batch axis first) as part of a batch; returns this request's slice of the outputs.

        `session` names the sequence a step belongs to (None for a stateless request); `ends` says it
        is the sequence's last step, after which the batcher stops waiting for that session.
        """
        if self._closed:
            raise ModelNotReady("this model version was unloaded while the request waited; send it again")
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._task is None or self._task.done():
            # The queue and the task belong to one event loop (a new loop, e.g. in tests, starts afresh).
            self._loop, self._held, self._wakeup = loop, None, None
            self._waiting.clear()
            self._task = loop.create_task(self._serve(), name="seqserve-batcher")
        future: asyncio.Future[Feeds] = loop.create_future()
        pending = _Pending(feeds, future, session, ends, long_run(feeds, self._timesteps))
        if session is not None and not pending.long:
            self._streaming[session] = pending.queued
            self._streaming.move_to_end(session)
            if self._idle and not self._waiting and self._streaming_sessions() == 1:
                # The only stream, and nothing to batch with: run now rather than via the collector
                # task, which would cost two more turns of the event loop.
                await self._run_group([pending])
                return await future
        self._waiting.append(pending)
        wakeup = self._wakeup
        if wakeup is not None and len(self._waiting) >= self._wake_when and not wakeup.done():
            wakeup.set_result(None)
        return await future

    def close(self) -> None:
        """Refuses new runs; what is queued still runs, then the task and the compute thread end.

        Safe from any thread: the store unloads versions from its scanning thread.
        """
        self._closed = True
        loop = self._loop
        if loop is None or loop.is_closed() or self._task is None or self._task.done():
            self._shutdown()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._begin_close()
        else:
            loop.call_soon_threadsafe(self._begin_close)

    async def wait_closed(self) -> None:
        """Waits until a closed batcher's task (after its long runs) has ended (for tests and orderly shutdown)."""
        if self._task is not None and self._loop is asyncio.get_running_loop():
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _begin_close(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)  # the collector looks again, sees the queue empty and ends

    def _shutdown(self) -> None:
        # Runs already handed to a thread finish; then the threads end.
        for executor in (self._executor, self._long_executor):
            if executor is not None:
                executor.shutdown(wait=False)

    async def _serve(self) -> None:
        try:
            while True:
                batch = await self._collect()
                if not batch:  # closed, and nothing left to run but the long runs under way
                    while self._long_runs:
                        await asyncio.gather(*self._long_runs, return_exceptions=True)
                    return
                await self._run_batches(batch)
                del batch  # waiting for the next one must not keep this one's tensors alive
        finally:
            self._shutdown()

    async def _run_batches(self, batch: list[_Pending]) -> None:
        groups: dict[object, list[_Pending]] = {}
        for pending in batch:
            groups.setdefault(pending.shape_key, []).append(pending)
        for group in groups.values():
            if any(pending.long for pending in group):
                # Not awaited: the collector goes on gathering the next batches meanwhile.
                task = asyncio.get_running_loop().create_task(self._run_group(group, long=True))
                self._long_runs.add(task)
                task.add_done_callback(self._long_runs.discard)
            else:
                await self._run_group(group)

    async def _collect(self) -> list[_Pending]:
        """The first waiting run, then more, until the batch is full or the wait is over (module docstring).

        Empty only when the batcher is closed and nothing is left to run."""
        while self._held is None and not self._waiting:
            if self._closed:
                return []
            self._idle = True
            try:
                await self._arrival(1, None)
            finally:
                self._idle = False
        first = self._held or self._waiting.popleft()
        self._held = None
        batch, samples, steps = [first], first.size, int(first.session is not None)
        while samples < self.max_batch_size:
            if not self._waiting:
                delay, wanted = self.max_queue_delay, 1
                if self.sequence_batch_delay > 0:
                    missing = self._streaming_sessions() - steps  # streams whose next step is not here yet
                    if missing > 0:
                        # Woken when they are all here, or when enough are here to fill the batch.
                        delay = max(delay, self.sequence_batch_delay)
                        wanted = min(missing, self.max_batch_size - samples)
                remaining = first.queued + delay - time.perf_counter()
                if remaining <= 0:
                    break
                await self._arrival(wanted, remaining)
                continue
            pending = self._waiting.popleft()
            if samples + pending.size > self.max_batch_size:
                self._held = pending
                break
            batch.append(pending)
            samples += pending.size
            steps += pending.session is not None
        return batch

    async def _arrival(self, count: int, timeout: float | None) -> None:
        """Sleeps until `count` runs are waiting, or `timeout` seconds have passed."""
        loop = asyncio.get_running_loop()
        wakeup = self._wakeup = loop.create_future()
        self._wake_when = count
        timer = loop.call_later(timeout, _resolve, wakeup) if timeout is not None else None
        try:
            await wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def _streaming_sessions(self) -> int:
        """Sessions that queued a step within ACTIVE_WINDOW (older ones are forgotten here)."""
        streaming, cutoff = self._streaming, time.perf_counter() - ACTIVE_WINDOW
        while streaming and next(iter(streaming.values())) < cutoff:
            streaming.popitem(last=False)
        return len(streaming)

    async def _run_group(self, group: list[_Pending], long: bool = False) -> None:
        for pending in group:
            if pending.ends and pending.session is not None:
                self._streaming.pop(pending.session, None)  # the next batches do not wait for it
        live = [p for p in group if not p.future.done()]  # a cancelled client's request is skipped
        if not live:
            return
        started = time.perf_counter()
        try:
            if long:
                if self._long_executor is None:
                    self._long_executor = ThreadPoolExecutor(
                        LONG_RUN_THREADS, thread_name_prefix=f"seqserve-long-{self._name}", initializer=_lower_priority
                    )
                parts = await asyncio.get_running_loop().run_in_executor(self._long_executor, self._run_batch, live)
            elif self._executor is None:
                parts = self._run_batch(live)
            else:
                # Stacking, the run and the slicing all happen on the compute thread: the event loop
                # only hands over the batch and completes the futures.
                parts = await asyncio.get_running_loop().run_in_executor(self._executor, self._run_batch, live)
        except Exception as e:  # a failure outside the runs themselves (e.g. the thread pool is gone)
            parts = [e] * len(live)
        self._record(live, started)
        for pending, part in zip(live, parts, strict=True):
            if pending.future.done():
                continue
            if isinstance(part, Exception):
                pending.future.set_exception(part)
            else:
                pending.future.set_result(part)

    def _run_batch(self, live: list[_Pending]) -> list[Feeds | Exception]:
        """Each request's outputs, or the error that is its own: a batch that fails is run again in
        halves, down to single requests, so one bad request among valid ones fails alone (a run is
        pure: rerunning a session's step from the same states gives the same new states)."""
        try:
            return list(self._run_stacked(live))
        except Exception as e:
            if len(live) == 1:
                return [e]
            log.info("a batch of %d requests failed (%s); running them again in halves", len(live), e)
        half = len(live) // 2
        return self._run_batch(live[:half]) + self._run_batch(live[half:])

    def _run_stacked(self, live: list[_Pending]) -> list[Feeds]:
        if len(live) == 1:
            return [self._run(live[0].feeds)]
        feeds = {name: np.concatenate([p.feeds[name] for p in live]) for name in live[0].feeds}
        outputs = self._run(feeds)
        parts, offset = [], 0
        for pending in live:
            end = offset + pending.size
            # Views: a session record copies its states out (seqserve.sessions.packed), and answers
            # are encoded at once, so nothing keeps the batch's arrays alive for long.
            parts.append({k: v[offset:end] for k, v in outputs.items()})
            offset = end
        return parts

    def _record(self, live: list[_Pending], started: float) -> None:
        samples, waited = 0, 0.0
        for pending in live:
            samples += pending.size
            waited += started - pending.queued
        self.stats.record(len(live), samples)
        if self._on_batch is not None:
            self._on_batch(len(live), samples, time.perf_counter() - started, waited)


def _lower_priority() -> None:
    """Long runs are background work: on a busy machine the event loop and short runs get the CPU
    first (Linux: a thread's nice value is its own)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
