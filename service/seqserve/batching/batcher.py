"""The batcher: concurrent runs of one model version become one ORT run over the stacked batch.

Each run is queued with its own future. One task per model takes what is waiting (up to
`max_batch_size` samples, waiting at most `max_queue_delay` for more once the first arrived),
groups the runs whose tensors agree on every dimension but the batch, concatenates inputs and
recurrent states along the batch axis, runs ONNX Runtime once per group, and slices outputs and new
states back onto the futures. A failed run fails every future in it.

Where the run happens is the caller's choice: on a compute thread (an executor), so the event loop
keeps serving the network while ORT works, or on the event loop itself (no executor). On a machine
with few cores the second is faster: handing each batch to a thread and back costs a thread switch
and GIL hand-offs both ways, while the overlap it buys needs a free core (bench/README.md).

Steps of one session never meet in a batch: the session manager holds a session while its step
runs, so at most one of its steps is ever queued. Stateless requests and steps of different
sessions mix freely; a sample's result does not depend on its neighbours (every op in our graphs
works per sample), which the tests check to 1e-6.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from seqserve.store.signature import Signature

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], Feeds]


def batchable(signature: Signature) -> bool:
    """Batching needs the batch axis first and free on every input, output and state."""
    shapes = [t.shape for t in (*signature.inputs, *signature.outputs)] + [s.shape for s in signature.states]
    return all(len(shape) > 0 and shape[0] < 0 for shape in shapes)


class _Pending:
    """A queued run. Runs of equal `shape_key` (every tensor's name, dtype and non-batch dimensions)
    can be concatenated along the batch axis."""

    __slots__ = ("feeds", "size", "future", "shape_key")

    def __init__(self, feeds: Feeds, future: asyncio.Future[Feeds]) -> None:
        self.feeds, self.future = feeds, future
        self.size = int(next(iter(feeds.values())).shape[0])
        self.shape_key = tuple((name, value.shape[1:], value.dtype) for name, value in feeds.items())


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
        executor: Executor | None,
        max_batch_size: int = 64,
        max_queue_delay: float = 0.0,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._held: _Pending | None = None  # too big to join the last batch: leads the next one
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = BatchStats()

    async def run(self, feeds: Feeds) -> Feeds:
        """Runs `feeds` (batch axis first) as part of a batch; returns this request's slice of the outputs."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._task is None or self._task.done():
            # The queue and the task belong to one event loop (a new loop, e.g. in tests, starts afresh).
            self._loop, self._queue, self._held = loop, asyncio.Queue(), None
            self._task = loop.create_task(self._serve(), name="seqserve-batcher")
        assert self._queue is not None
        future: asyncio.Future[Feeds] = loop.create_future()
        self._queue.put_nowait(_Pending(feeds, future))  # the queue is unbounded: put never waits
        return await future

    async def close(self) -> None:
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _serve(self) -> None:
        while True:
            batch = await self._collect()
            groups: dict[object, list[_Pending]] = {}
            for pending in batch:
                groups.setdefault(pending.shape_key, []).append(pending)
            for group in groups.values():
                await self._run_group(group)

    async def _collect(self) -> list[_Pending]:
        """The first waiting run, then whatever else fits before the delay runs out."""
        assert self._queue is not None
        first, self._held = self._held or await self._queue.get(), None
        batch, samples = [first], first.size
        deadline = time.perf_counter() + self.max_queue_delay
        while samples < self.max_batch_size:
            try:
                pending = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    pending = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if samples + pending.size > self.max_batch_size:
                self._held = pending
                break
            batch.append(pending)
            samples += pending.size
        return batch

    async def _run_group(self, group: list[_Pending]) -> None:
        live = [p for p in group if not p.future.done()]  # a cancelled client's request is skipped
        if not live:
            return
        started = time.perf_counter()
        try:
            if self._executor is None:
                parts = self._run_batch(live)
            else:
                # Stacking, the run and the slicing all happen on the compute thread: the event loop
                # only hands over the batch and completes the futures.
                parts = await asyncio.get_running_loop().run_in_executor(self._executor, self._run_batch, live)
        except Exception as e:
            for pending in live:
                if not pending.future.done():
                    pending.future.set_exception(e)
            return
        self._record(len(live), sum(p.size for p in live), started)
        for pending, part in zip(live, parts, strict=True):
            if not pending.future.done():
                pending.future.set_result(part)

    def _run_batch(self, live: list[_Pending]) -> list[Feeds]:
        if len(live) == 1:
            return [self._run(live[0].feeds)]
        feeds = {name: np.concatenate([p.feeds[name] for p in live]) for name in live[0].feeds}
        outputs = self._run(feeds)
        parts, offset = [], 0
        for pending in live:
            end = offset + pending.size
            # Copies, so a session's stored state does not keep the whole batch's arrays alive.
            parts.append({k: v[offset:end].copy() for k, v in outputs.items()})
            offset = end
        return parts

    def _record(self, requests: int, samples: int, started: float) -> None:
        self.stats.record(requests, samples)
        if self._on_batch is not None:
            self._on_batch(requests, samples, time.perf_counter() - started)
