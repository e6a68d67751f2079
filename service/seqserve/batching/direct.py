"""Running each request of a model version alone, for a model that does not batch.

Small requests run on the event loop itself: handing a single streamed step to a thread costs
several times what ONNX Runtime spends on it (~375 us vs ~40 us measured here), while running it
inline blocks the loop only that long. Larger ones, or ones over many timesteps (few elements can
still be a long run), run on a thread pool of the version's own, made on first use and shut down
with the version.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from seqserve.batching.batcher import LONG_RUN_TIMESTEPS, Feeds, RunFn, TimestepsFn
from seqserve.errors import ModelNotReady

# (seconds waiting for a thread, seconds in ONNX Runtime) of each run.
OnRun = Callable[[float, float], None]


class DirectRuns:
    def __init__(
        self,
        run: RunFn,
        inline_max_elements: int,
        on_run: OnRun,
        name: str = "compute",
        timesteps: TimestepsFn | None = None,
    ) -> None:
        self._run = run
        self._timesteps = timesteps
        self.inline_max_elements = inline_max_elements
        self._on_run = on_run
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    async def run(self, feeds: Feeds, session: str | None = None, ends: bool = False) -> Feeds:
        """Runs `feeds` alone. `session` and `ends` are taken for the batcher's sake and not needed here."""
        if self._closed:
            raise ModelNotReady("this model version was unloaded while the request waited; send it again")
        if sum(a.size for a in feeds.values()) <= self.inline_max_elements and not self._many_steps(feeds):
            began = time.perf_counter()
            result = self._run(feeds)
            self._on_run(0.0, time.perf_counter() - began)
            return result
        submitted = time.perf_counter()

        def timed() -> Feeds:
            began = time.perf_counter()
            result = self._run(feeds)
            self._on_run(began - submitted, time.perf_counter() - began)
            return result

        if self._executor is None:
            workers = max(2, os.cpu_count() or 1)
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"seqserve-{self._name}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, timed)

    def _many_steps(self, feeds: Feeds) -> bool:
        return self._timesteps is not None and self._timesteps(feeds) > LONG_RUN_TIMESTEPS

    def close(self) -> None:
        """Refuses new runs; runs already on a thread finish, then its threads end. Safe from any thread."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False)
