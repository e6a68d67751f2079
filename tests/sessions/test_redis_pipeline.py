"""Calls queued in one turn of the event loop share one pipeline to a real Redis, calls of one group
share one command, and a pipeline that fails fails every call in it: none is left waiting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from seqserve.sessions.redis_pipeline import Coalescer


def _push(pipe: Any, group: str, entries: list[Any]) -> tuple[int, Any]:
    """A group's entries pushed onto the list `group` by one RPUSH; each entry's result, its place."""
    pipe.rpush(group, *entries)
    return 1, lambda results: [results[0] - len(entries) + i for i in range(len(entries))]


async def test_calls_of_one_turn_share_a_round_trip_and_get_their_own_results(redis_url: str) -> None:
    trips: list[tuple[int, int]] = []
    client = aioredis.from_url(redis_url)
    coalescer = Coalescer(client, lambda keys: 1, lambda seconds, calls, shards: trips.append((calls, shards)), _push)

    def setter(k: int) -> Any:
        return lambda pipe: (pipe.set(f"coalesced:{k}", k), pipe.get(f"coalesced:{k}"))

    try:
        results = await asyncio.gather(*(coalescer.call(setter(k), 2, f"coalesced:{k}") for k in range(10)))
        assert [r[1] for r in results] == [str(k).encode() for k in range(10)]
        assert trips == [(10, 1)]
        assert await coalescer.call(setter(99), 2, "coalesced:99") == [True, b"99"]  # alone: at once
        assert trips[-1] == (1, 1)
    finally:
        await client.aclose()


async def test_a_pipeline_that_cannot_be_built_fails_every_call_in_it(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    coalescer = Coalescer(client, lambda keys: 1, lambda *_: None, _push)

    def broken(pipe: Any) -> None:
        raise RuntimeError("this call cannot be queued")

    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                coalescer.call(lambda pipe: pipe.get("a"), 1, "a"),
                coalescer.call(broken, 1, "b"),
                return_exceptions=True,
            ),
            timeout=5,
        )
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        with pytest.raises(RuntimeError):
            await coalescer.call(broken, 1, "c")
        assert await coalescer.call(lambda pipe: pipe.ping(), 1, "d") == [True]  # and it goes on
    finally:
        await client.aclose()


async def test_calls_of_one_group_are_one_command_and_a_failing_group_fails_alone(redis_url: str) -> None:
    trips: list[int] = []
    client = aioredis.from_url(redis_url)
    coalescer = Coalescer(client, lambda keys: 1, lambda seconds, calls, shards: trips.append(calls), _push)
    await client.delete("group:a", "group:b")
    await client.set("group:not-a-list", "x")
    await client.config_resetstat()
    try:
        outcomes = await asyncio.gather(
            *(coalescer.call_in_group("group:a", f"a{k}") for k in range(5)),
            *(coalescer.call_in_group("group:b", f"b{k}") for k in range(3)),
            *(coalescer.call_in_group("group:not-a-list", k) for k in range(2)),
            coalescer.call(lambda pipe: pipe.get("group:not-a-list"), 1, "group:not-a-list"),
            return_exceptions=True,
        )
        assert outcomes[:8] == [0, 1, 2, 3, 4, 0, 1, 2]
        assert all("WRONGTYPE" in str(o) for o in outcomes[8:10]), outcomes[8:10]
        assert outcomes[10] == [b"x"]
        assert trips == [11]
        assert await client.lrange("group:a", 0, -1) == [f"a{k}".encode() for k in range(5)]
        assert (await client.info("commandstats"))["cmdstat_rpush"]["calls"] == 3  # one per group
    finally:
        await client.aclose()
