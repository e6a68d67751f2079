"""Session states in Redis (one server or a Redis Cluster), shared by every replica, surviving a restart.

Each session is a hash {rev, blob} that expires after the idle timeout; every write is one Lua
script, so compare-and-set on the write revision, the LRU index and eviction are atomic even with
several replicas writing. A second key per session remembers why it is gone (ended, evicted, or,
when the session key vanished while this one still says "live", expired by its TTL).

Sharding. A session belongs to one of `buckets` buckets (crc32 of its key); every key of a bucket
carries the bucket's hash tag, so a script touches one hash slot, which Redis Cluster requires,
and buckets spread over the cluster's shards. The LRU index, the eviction counter and the session
limits are per bucket: with B buckets, at most ceil(max / B) sessions per bucket, for the server's
maximum and for each model's. One Redis has one bucket: the limits are exact there.

Speed. Calls made in one turn of the event loop go in one pipeline per shard (`Coalescer`): the
saves of a batched run's sessions are one round trip. A replica keeps a copy of each session it
served (bounded, least recently used dropped first), so a continuing step reads nothing: the copy
may be stale (another replica served a step since), which the compare-and-set of the save
detects; the caller then reloads and applies the step once (`seqserve.sessions.steps`).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import redis

from seqserve.errors import LimitExceeded, SessionConflict, SessionNotFound, StoreUnavailable
from seqserve.sessions.redis_client import connect, is_cluster
from seqserve.sessions.redis_pipeline import Coalescer
from seqserve.sessions.state import SessionState
from seqserve.sessions.stores import SessionLimits, StateStore, concurrent_write, gone_message

# KEYS: session, tombstone, bucket LRU index, bucket model LRU index, bucket eviction counter.
# ARGV: expected revision ("" = create or replace), model max sessions in the bucket (0 = no
# bound), blob, idle ttl ms (0 = none), tombstone ttl ms, server max sessions in the bucket,
# eviction grace ms, the bucket's key prefix, what to say once the idle ttl has run out, the
# record's generation.
# Returns {0, new revision} or {negative code, ...}: {-2, stored revision, stored generation}.
_SAVE = """
local current = redis.call('HGET', KEYS[1], 'rev')
if ARGV[1] ~= '' then
  if not current then return {-1} end
  if current ~= ARGV[1] then return {-2, tonumber(current), redis.call('HGET', KEYS[1], 'gen')} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = string.sub(KEYS[1], string.len(ARGV[8]) + 3)
-- Evicts the least recently used sessions of an index until it holds fewer than max; entries of
-- sessions that expired by TTL are only trimmed. Returns false when the oldest is still in use.
local function make_room(index, max)
  while redis.call('ZCARD', index) >= max do
    local oldest = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
    local victim = ARGV[8] .. 's:' .. oldest[1]
    if redis.call('EXISTS', victim) == 1 then
      if now - tonumber(oldest[2]) < tonumber(ARGV[7]) then return false end
      redis.call('DEL', victim)
      redis.call('SET', ARGV[8] .. 't:' .. oldest[1],
        'was evicted to make room for newer sessions (least recently used)', 'PX', ARGV[5])
      redis.call('INCR', KEYS[5])
    end
    redis.call('ZREM', index, oldest[1])
  end
  return true
end
if not current then
  if tonumber(ARGV[2]) > 0 and not make_room(KEYS[4], tonumber(ARGV[2])) then return {-4} end
  if not make_room(KEYS[3], tonumber(ARGV[6])) then return {-3} end
end
local revision = (tonumber(current) or 0) + 1
redis.call('HSET', KEYS[1], 'rev', revision, 'gen', ARGV[10], 'blob', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) else redis.call('PERSIST', KEYS[1]) end
redis.call('SET', KEYS[2], 'live:' .. ARGV[9], 'PX', ARGV[5])
redis.call('ZADD', KEYS[3], now, member)
redis.call('ZADD', KEYS[4], now, member)
return {0, revision}
"""

# KEYS: session, tombstone, bucket LRU index, bucket model LRU index.
# ARGV: reason, tombstone ttl ms, member, expected revision ("" = whatever it is).
# Returns 1 (deleted), 0 (there was none) or {-2, stored revision, stored generation}.
_DELETE = """
if ARGV[4] ~= '' then
  local current = redis.call('HGET', KEYS[1], 'rev')
  if current and current ~= ARGV[4] then return {-2, tonumber(current), redis.call('HGET', KEYS[1], 'gen')} end
end
local existed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
if existed == 1 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return existed
"""

_TOMBSTONE_TTL_MS = 3_600_000
_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ClusterDownError)
CLUSTER_BUCKETS = 64

P = ParamSpec("P")
T = TypeVar("T")


def _answered(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A store call that Redis does not answer (down, unreachable, or slower than the timeout)
    fails as StoreUnavailable (503 / UNAVAILABLE: retryable), not as a crash."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except _UNREACHABLE as e:
            raise StoreUnavailable(
                f"the session store did not answer ({type(e).__name__}: {e}); the request may be sent again "
                "(a step numbered with sequence_step is applied once however often it is sent)"
            ) from None

    return call


class RedisStateStore(StateStore):
    def __init__(
        self,
        url: str,
        max_sessions: int = 100_000,
        idle_timeout: float = 300.0,
        eviction_grace: float = 5.0,
        prefix: str = "seqserve:",
        timeout: float = 5.0,
        buckets: int | None = None,
        max_copies: int = 10_000,
    ) -> None:
        self.url = url
        self.client: Any = connect(url, timeout)
        self.cluster = is_cluster(url)
        self.buckets = buckets or (CLUSTER_BUCKETS if self.cluster else 1)
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.eviction_grace = eviction_grace
        self.prefix = prefix
        self.max_copies = max_copies
        self._copies: OrderedDict[str, SessionState] = OrderedDict()
        self._pipeline = Coalescer(self.client, self._shards_of, self._round_trip)
        self._shas: dict[str, str] = {}
        self._loading = asyncio.Lock()
        self.round_trips = 0  # per shard, since start
        self.conflicts = 0
        # Refreshed by sweep() (a scrape must not wait on Redis): None until the first one.
        self.active: int | None = None
        self.evictions: int | None = None

    # -- keys ---------------------------------------------------------------------------------

    def _bucket(self, key: str) -> str:
        """The key prefix of `key`'s bucket; its hash tag puts all of them in one slot."""
        return f"{self.prefix}{{b{zlib.crc32(key.encode()) % self.buckets}}}:"

    def _keys(self, key: str) -> list[str]:
        bucket, model = self._bucket(key), key.split("/", 1)[0]  # keys are "<model>/<kind>:<id>"
        return [f"{bucket}s:{key}", f"{bucket}t:{key}", f"{bucket}lru", f"{bucket}lru:{model}", f"{bucket}evictions"]

    def _per_bucket(self, maximum: int | None) -> int:
        return 0 if not maximum else math.ceil(maximum / self.buckets)

    def _shards_of(self, keys: list[str]) -> int:
        if not self.cluster:
            return 1
        return len({self.client.get_node_from_key(key).name for key in keys})

    # -- the StateStore interface -------------------------------------------------------------

    @_answered
    async def load(self, key: str, fresh: bool = False) -> SessionState:
        if not fresh:
            kept = self._copies.get(key)
            if kept is not None:
                self._copies.move_to_end(key)
                served = copy.copy(kept)  # a shallow copy: the arrays are shared, read-only
                served.from_copy = True
                return served
        session, tombstone = self._keys(key)[:2]

        def add(pipe: Any) -> None:
            pipe.hmget(session, ["blob", "rev"])
            pipe.get(tombstone)

        (found, reason) = _raise_errors(await self._pipeline.call(add, 2, session))
        blob, revision = found
        if blob is not None:
            state = SessionState.from_bytes(blob)
            state.revision = int(revision)
            self._keep(key, state)
            return state
        self._copies.pop(key, None)
        # "live:..." is written on every save: the session key itself has timed out since.
        raise SessionNotFound(gone_message((reason or b"").decode().removeprefix("live:") or None))

    @_answered
    async def save(
        self, key: str, state: SessionState, expected_revision: int | None, limits: SessionLimits | None = None
    ) -> None:
        limits = limits or SessionLimits()
        idle = self.idle_timeout if limits.idle_timeout is None else limits.idle_timeout
        keys = self._keys(key)
        args = [
            "" if expected_revision is None else str(expected_revision),
            self._per_bucket(limits.max_sessions),
            state.to_bytes(),
            int(idle * 1000),
            max(_TOMBSTONE_TTL_MS, int(idle * 2000)),
            self._per_bucket(self.max_sessions),
            int(self.eviction_grace * 1000),
            self._bucket(key),
            f"expired after {idle:g} s idle",
            str(state.generation),
        ]
        result = await self._script(_SAVE, keys, args)
        code = int(result[0])
        if code == 0:
            state.revision = int(result[1])
            state.last_used = time.time()
            self._keep(key, state)
            return
        self._copies.pop(key, None)
        if code == -1:
            await self.load(key, fresh=True)  # raises the reason the session is gone
        if code == -2:
            assert expected_revision is not None
            raise self._conflict(result, expected_revision)
        what = "the server" if code == -3 else f"model '{state.model}'"
        raise LimitExceeded(
            f"{what} holds its maximum of sessions and none has been idle long enough to evict; "
            "retry later or end unused sessions"
        )

    @_answered
    async def delete(self, key: str, reason: str = "has ended", expected_revision: int | None = None) -> bool:
        self._copies.pop(key, None)
        expected = "" if expected_revision is None else str(expected_revision)
        result = await self._script(_DELETE, self._keys(key)[:4], [reason, _TOMBSTONE_TTL_MS, key, expected])
        if isinstance(result, list):
            assert expected_revision is not None
            raise self._conflict(result, expected_revision)
        return bool(result)

    @_answered
    async def count(self) -> int:
        return sum(await self._per_bucket_values("zcard", "lru"))

    @_answered
    async def sweep(self) -> int:
        """Redis drops idle sessions by TTL; this trims them from the LRU indexes, drops local
        copies gone idle, and refreshes the counts /metrics reports."""
        trimmed = 0
        if self.idle_timeout > 0:
            now_s, now_us = await self.client.time()
            cutoff = now_s * 1000 + now_us // 1000 - int(self.idle_timeout * 1000)
            for bucket in self._bucket_prefixes():
                stale = [m.decode() for m in await self.client.zrangebyscore(f"{bucket}lru", 0, cutoff)]
                gone = [m for m in stale if not await self.client.exists(f"{bucket}s:{m}")]
                for member in gone:
                    await self.client.zrem(f"{bucket}lru", member)
                    await self.client.zrem(self._keys(member)[3], member)
                trimmed += len(gone)
            idle_since = time.time() - self.idle_timeout
            for key in [k for k, state in self._copies.items() if state.last_used < idle_since]:
                del self._copies[key]
        self.active = sum(await self._per_bucket_values("zcard", "lru"))
        self.evictions = sum(int(v or 0) for v in await self._per_bucket_values("get", "evictions"))
        return trimmed

    async def close(self) -> None:
        await self.client.aclose()

    # -- helpers -------------------------------------------------------------------------------

    def _keep(self, key: str, state: SessionState) -> None:
        """Keeps the session's latest state and revision as this replica's copy."""
        self._copies[key] = state
        self._copies.move_to_end(key)
        while len(self._copies) > self.max_copies:
            self._copies.popitem(last=False)

    def _bucket_prefixes(self) -> list[str]:
        return [f"{self.prefix}{{b{b}}}:" for b in range(self.buckets)]

    async def _per_bucket_values(self, command: str, suffix: str) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for bucket in self._bucket_prefixes():
            getattr(pipe, command)(f"{bucket}{suffix}")
        return list(await pipe.execute())

    async def _script(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Runs a script through the pipeline; a node that does not know it (a fresh primary after
        a failover) is taught it, and the call repeated."""
        sha = self._shas.get(script) or await self._load_script(script)

        def add(pipe: Any) -> None:
            # execute_command: redis-py refuses pipe.evalsha() on a cluster, though the command is fine there.
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)

        (result,) = await self._pipeline.call(add, 1, keys[0])
        if isinstance(result, redis.exceptions.NoScriptError):
            sha = await self._load_script(script, again=True)
            return await self.client.evalsha(sha, len(keys), *keys, *args)
        _raise_errors([result])
        return result

    async def _load_script(self, script: str, again: bool = False) -> str:
        async with self._loading:
            if again or script not in self._shas:
                loaded = await self.client.script_load(script)  # every primary, on a cluster
                self._shas[script] = next(iter(loaded.values())) if isinstance(loaded, dict) else loaded
            return self._shas[script]

    def _conflict(self, result: list[Any], expected_revision: int) -> SessionConflict:
        """The error of a lost compare-and-set, {-2, stored revision, stored generation}."""
        self.conflicts += 1
        self.events.conflict()
        generation = int(result[2]) if len(result) > 2 and result[2] is not None else None
        return SessionConflict(concurrent_write(int(result[1]), expected_revision), generation)

    def _round_trip(self, seconds: float, calls: int, shards: int) -> None:
        self.round_trips += shards
        self.events.round_trip(seconds, calls, shards)


def _raise_errors(results: list[Any]) -> list[Any]:
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results
