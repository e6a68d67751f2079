"""Redis calls made in one turn of the event loop, sent together: one pipelined round trip per shard.

A batched ONNX Runtime run answers all its sessions' steps at once: their requests resume in the
same turn of the event loop and each saves its session's new state. Sent one by one, that is one
round trip per session; queued here, the saves of a whole batch go in one pipeline (which a Redis
Cluster client splits by node and sends to the nodes concurrently). Nothing waits for a fuller
pipeline: the flush runs as soon as the loop has run what was ready, so an idle stream's save goes
out at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

# Queues one call's commands on a pipeline; the results of those commands come back as a list.
AddCommands = Callable[[Any], None]
# (seconds the round trip took, calls in it, shards it touched)
OnRoundTrip = Callable[[float, int, int], None]


class Coalescer:
    def __init__(self, client: Any, shards_of: Callable[[list[str]], int], on_round_trip: OnRoundTrip) -> None:
        self._client = client
        self._shards_of = shards_of
        self._on_round_trip = on_round_trip
        self._queue: list[tuple[AddCommands, int, str, asyncio.Future[list[Any]]]] = []

    async def call(self, add: AddCommands, commands: int, key: str) -> list[Any]:
        """Runs the `commands` that `add` queues (on `key`'s shard) in the next pipeline; their
        results, errors as exception objects (a refused script, a WRONGTYPE...)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((add, commands, key, future))
        if len(self._queue) == 1:
            loop.call_soon(lambda: loop.create_task(self._flush(), name="seqserve-redis-pipeline"))
        return await future

    async def _flush(self) -> None:
        batch, self._queue = self._queue, []
        began = time.perf_counter()
        try:
            pipe = self._client.pipeline(transaction=False)
            for add, _, _, _ in batch:
                add(pipe)
            results = await pipe.execute(raise_on_error=False)
        except BaseException as e:  # the connection failed or timed out (or a bug): every call in it fails alike
            for *_, future in batch:
                if not future.done():
                    future.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        self._on_round_trip(time.perf_counter() - began, len(batch), self._shards_of([key for _, _, key, _ in batch]))
        offset = 0
        for _, commands, _, future in batch:
            if not future.done():
                future.set_result(results[offset : offset + commands])
            offset += commands
