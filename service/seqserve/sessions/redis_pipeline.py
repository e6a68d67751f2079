"""Redis calls made in one turn of the event loop, sent together: one pipelined round trip per shard.

A batched ONNX Runtime run answers all its sessions' steps at once: their requests resume in the
same turn of the event loop and each saves its session's new state. Sent one by one, that is one
round trip per session; queued here, they go in one pipeline (which a Redis Cluster client splits
by node and sends to the nodes concurrently). Calls of one group (the saves of one bucket of
sessions) are merged further, into one command for the group. Nothing waits for a fuller pipeline:
the flush runs as soon as the loop has run what was ready, so an idle stream's save goes out at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

# Queues one call's commands on a pipeline; the results of those commands come back as a list.
AddCommands = Callable[[Any], None]
# Queues the commands of a group's calls (given their entries) on a pipeline; returns how many it
# queued and how to split their results into one result per entry.
MergeGroup = Callable[[Any, str, list[Any]], tuple[int, Callable[[list[Any]], list[Any]]]]
# (seconds the round trip took, calls in it, shards it touched)
OnRoundTrip = Callable[[float, int, int], None]


class Coalescer:
    def __init__(
        self, client: Any, shards_of: Callable[[list[str]], int], on_round_trip: OnRoundTrip, merge: MergeGroup
    ) -> None:
        self._client = client
        self._shards_of = shards_of
        self._on_round_trip = on_round_trip
        self._merge = merge
        self._calls: list[tuple[AddCommands, int, str, asyncio.Future[list[Any]]]] = []
        self._groups: dict[str, list[tuple[Any, asyncio.Future[Any]]]] = {}

    async def call(self, add: AddCommands, commands: int, key: str) -> list[Any]:
        """Runs the `commands` that `add` queues (on `key`'s shard) in the next pipeline; their
        results, errors as exception objects (a refused script, a WRONGTYPE...)."""
        future: asyncio.Future[list[Any]] = self._queued()
        self._calls.append((add, commands, key, future))
        return await future

    async def call_in_group(self, group: str, entry: Any) -> Any:
        """`entry`'s result from its group's merged commands (`group` names their shard too); an
        error of those commands is raised."""
        future: asyncio.Future[Any] = self._queued()
        self._groups.setdefault(group, []).append((entry, future))
        return await future

    def _queued(self) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if not self._calls and not self._groups:
            loop.call_soon(lambda: loop.create_task(self._flush(), name="seqserve-redis-pipeline"))
        return loop.create_future()

    async def _flush(self) -> None:
        calls, self._calls = self._calls, []
        groups, self._groups = self._groups, {}
        futures = [future for *_, future in calls] + [future for entries in groups.values() for _, future in entries]
        began = time.perf_counter()
        try:
            pipe = self._client.pipeline(transaction=False)
            for add, _, _, _ in calls:
                add(pipe)
            merged = [(entries, *self._merge(pipe, name, [e for e, _ in entries])) for name, entries in groups.items()]
            results = await pipe.execute(raise_on_error=False)
        except BaseException as e:  # the connection failed or timed out (or a bug): every call in it fails alike
            _fail(futures, e)
            if not isinstance(e, Exception):
                raise
            return
        keys = [key for _, _, key, _ in calls] + list(groups)
        self._on_round_trip(time.perf_counter() - began, len(futures), self._shards_of(keys))
        offset = 0
        for _, commands, _, future in calls:
            if not future.done():
                future.set_result(results[offset : offset + commands])
            offset += commands
        for entries, commands, split in merged:
            answers = results[offset : offset + commands]
            offset += commands
            error = next((a for a in answers if isinstance(a, Exception)), None)
            if error is not None:
                _fail([future for _, future in entries], error)
                continue
            for (_, future), answer in zip(entries, split(answers), strict=True):
                if not future.done():
                    future.set_result(answer)


def _fail(futures: list[asyncio.Future[Any]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)
