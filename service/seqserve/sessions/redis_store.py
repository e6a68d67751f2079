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

Speed. Calls made in one turn of the event loop go in one pipeline per shard (`Coalescer`), and
the saves of one bucket made in one turn are one script call: the saves of a batched run's sessions
are one round trip, and on one Redis one command. A replica keeps a copy of each session it
served (bounded, least recently used dropped first), so a continuing step reads nothing: the copy
may be stale (another replica served a step since), which the compare-and-set of the save
detects; the caller then reloads and applies the step once (`seqserve.sessions.steps`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import redis

from seqserve.errors import LimitExceeded, SessionConflict, SessionNotFound, StoreUnavailable
from seqserve.sessions import codec
from seqserve.sessions.copies import SessionCopies
from seqserve.sessions.keys import owner_of_key
from seqserve.sessions.redis_client import connect, is_cluster
from seqserve.sessions.redis_pipeline import Coalescer
from seqserve.sessions.state import SessionState
from seqserve.sessions.stores import SessionLimits, StateStore, concurrent_write, gone_message
from seqserve.throttled_log import ThrottledLog

# Both scripts start with a shebang (Redis 7.0+, Valkey): Redis out of memory (maxmemory under
# noeviction) then refuses a save whole, before it runs, while a delete runs anyway (allow-oom)
# so that ending sessions frees memory.
#
# Saves the sessions of one bucket (one hash slot), all in one call.
# KEYS: the bucket's LRU index, its eviction counter, then for each session: its record, its
# tombstone, its model's LRU index in the bucket, its API key's LRU index in the bucket.
# ARGV: the bucket's key prefix, the server's max sessions in the bucket, eviction grace ms, how
# old (ms) a session's place in the LRU indexes and its tombstone may get before a save renews them,
# then for each session: expected revision ("" = create or replace), its model's max sessions in
# the bucket (0 = no bound), its key's (-1 = no API key, 0 = no bound), blob, idle ttl ms (0 =
# none), tombstone ttl ms, what to say once the idle ttl has run out, the record's generation.
# Returns, per session, {0, new revision} or {-1} (gone), {-2, stored revision, stored generation}
# (compare-and-set lost), {-3} (the bucket is full), {-4} (the model's share of it is full),
# {-5} (the API key's share of it is full).
# A session streaming steps renews its LRU place and tombstone once per renewal period, not per
# step: three of a save's six commands, most of its cost in Redis.
# With an API key, a new session evicts only a session of the same key (`SessionLimits`).
_SAVE = """#!lua
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, server_max, grace, renewal = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- A member is "<model>/<kind>:<id>" or "<model>/@<key name>/<kind>:<id>".
local function evict(member, tombstone_ttl)
  redis.call('DEL', prefix .. 's:' .. member)
  redis.call('SET', prefix .. 't:' .. member,
    'was evicted to make room for newer sessions (least recently used)', 'PX', tombstone_ttl)
  redis.call('INCR', KEYS[2])
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZREM', prefix .. 'lru:' .. string.match(member, '^[^/]*'), member)
  local owner = string.match(member, '^[^/]*/@([^/]*)/')
  if owner then redis.call('ZREM', prefix .. 'lru:@' .. owner, member) end
end
-- Makes an index hold fewer than max sessions: entries of sessions that expired by TTL are trimmed;
-- the least recently used is evicted if `may_evict` and idle past the grace. False when full.
local function make_room(index, max, tombstone_ttl, may_evict)
  while redis.call('ZCARD', index) >= max do
    local oldest = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
    if redis.call('EXISTS', prefix .. 's:' .. oldest[1]) == 1 then
      -- its place may be up to `renewal` old
      if not may_evict or now - tonumber(oldest[2]) < grace + renewal then return false end
      evict(oldest[1], tombstone_ttl)
    else
      redis.call('ZREM', index, oldest[1])
    end
  end
  return true
end
local function save(session, tombstone, model_index, owner_index, expected, model_max, owner_max, blob, idle,
                    tomb_ttl, expired, gen)
  local stored = redis.call('HMGET', session, 'rev', 'used')
  local current, used = stored[1], stored[2]
  if expected ~= '' then
    if not current then return {-1} end
    if current ~= expected then return {-2, tonumber(current), redis.call('HGET', session, 'gen')} end
  end
  local owned = tonumber(owner_max) >= 0
  if not current then
    if owned and tonumber(owner_max) > 0 and not make_room(owner_index, tonumber(owner_max), tomb_ttl, true) then
      return {-5}
    end
    if tonumber(model_max) > 0 and not make_room(model_index, tonumber(model_max), tomb_ttl, not owned) then
      return {-4}
    end
    if not make_room(KEYS[1], server_max, tomb_ttl, not owned) then return {-3} end
  end
  local revision = (tonumber(current) or 0) + 1
  if used and now - tonumber(used) < renewal then
    redis.call('HSET', session, 'rev', revision, 'gen', gen, 'blob', blob)
  else
    redis.call('HSET', session, 'rev', revision, 'gen', gen, 'blob', blob, 'used', now)
    redis.call('SET', tombstone, 'live:' .. expired, 'PX', tomb_ttl)
    local member = string.sub(session, string.len(prefix) + 3)
    redis.call('ZADD', KEYS[1], now, member)
    redis.call('ZADD', model_index, now, member)
    if owned then redis.call('ZADD', owner_index, now, member) end
  end
  if tonumber(idle) > 0 then redis.call('PEXPIRE', session, idle) else redis.call('PERSIST', session) end
  return {0, revision}
end
local results = {}
for i = 1, (#KEYS - 2) / 4 do
  local k, a = 4 * i - 1, 4 + 8 * (i - 1)
  results[i] = save(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
    ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8])
end
return results
"""

# KEYS: session, tombstone, bucket LRU index, bucket model LRU index, bucket API key LRU index.
# ARGV: reason, tombstone ttl ms, member, expected revision ("" = whatever it is).
# Returns 1 (deleted), 0 (there was none) or {-2, stored revision, stored generation}.
_DELETE = """#!lua flags=allow-oom
if ARGV[4] ~= '' then
  local current = redis.call('HGET', KEYS[1], 'rev')
  if current and current ~= ARGV[4] then return {-2, tonumber(current), redis.call('HGET', KEYS[1], 'gen')} end
end
local existed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
if existed == 1 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return existed
"""

_TOMBSTONE_TTL_MS = 3_600_000
# A streaming session's LRU place is at most this old (or the eviction grace, if shorter): the least
# recently used is chosen to within it; a session idle less than the grace is still never evicted.
_RENEWAL_MS = 1000
# Redis down, slow, or between owners of a slot (a failover, a resharding): retryable, nothing written.
_UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.SlotNotCoveredError,
)
CLUSTER_BUCKETS = 64
_store_failed = ThrottledLog(logging.getLogger(__name__), logging.WARNING)

P = ParamSpec("P")
T = TypeVar("T")


def _answered(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A store call that Redis does not answer (down, unreachable, or slower than the timeout)
    fails as StoreUnavailable (503 / UNAVAILABLE: retryable), not as a crash."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except redis.exceptions.OutOfMemoryError:
            raise LimitExceeded(
                "the session store is out of memory (Redis used memory > maxmemory): steps that write a session's "
                "state are refused, whole, until memory is freed; end unused sessions or give Redis more memory"
            ) from None
        except _UNREACHABLE as e:
            # redis-py's text names the store's address: it goes to the log, not to the client; at
            # most once a second, as every request fails while Redis is down.
            _store_failed("session store call failed: %s: %s", type(e).__name__, e)
            raise StoreUnavailable(
                f"the session store did not answer ({type(e).__name__}); the request may be sent again "
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
        max_copy_bytes: int = 1 << 30,
    ) -> None:
        self.url = url
        self.client: Any = connect(url, timeout)
        self.cluster = is_cluster(url)
        self.buckets = buckets or (CLUSTER_BUCKETS if self.cluster else 1)
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.eviction_grace = eviction_grace
        self.prefix = prefix
        self.copies = SessionCopies(max_copies, max_copy_bytes)
        self._pipeline = Coalescer(self.client, self._shards_of, self._round_trip, self._merge_saves)
        self._shas: dict[str, str] = {}
        # Each model's idle timeout, as its saves said (config.yaml may shorten it): the sweep trims
        # a model's index by it, so sessions gone by TTL leave the counts soon after they expire.
        self._idle_by_model: dict[str, float] = {}
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
        """Record, tombstone, and the LRU indexes of the bucket, its model and its API key."""
        bucket, model = self._bucket(key), key.split("/", 1)[0]  # keys are "<model>/<kind>:<id>"
        owner = f"{bucket}lru:@{owner_of_key(key) or ''}"  # "...lru:@" without keys: declared, never used
        return [f"{bucket}s:{key}", f"{bucket}t:{key}", f"{bucket}lru", f"{bucket}lru:{model}", owner]

    def _per_bucket(self, maximum: int | None) -> int:
        return 0 if not maximum else math.ceil(maximum / self.buckets)

    def _shards_of(self, keys: list[str]) -> int:
        if not self.cluster:
            return 1
        buckets = {key[: key.index("}") + 1] for key in keys}  # every key carries its bucket's hash tag
        return len({self.client.get_node_from_key(bucket).name for bucket in buckets})

    # -- the StateStore interface -------------------------------------------------------------

    @_answered
    async def load(self, key: str, fresh: bool = False) -> SessionState:
        if not fresh:
            kept = self.copies.get(key)
            if kept is not None:
                # The copy itself, not a copy of it: records are never changed in place, and its
                # session's steps take turns, so whoever had it before is done with it.
                kept.from_copy = True
                return kept
        session, tombstone = self._keys(key)[:2]

        def add(pipe: Any) -> None:
            pipe.hmget(session, ["blob", "rev"])
            pipe.get(tombstone)

        (found, reason) = _raise_errors(await self._pipeline.call(add, 2, session))
        blob, revision = found
        if blob is not None:
            try:
                state = codec.decode(blob)
            except codec.UnreadableRecord as e:
                raise SessionNotFound(
                    f"its stored state could not be read ({e}; written by another seqserve version?): "
                    "start the sequence again"
                ) from None
            state.revision = int(revision)
            self.copies.keep(key, state)
            return state
        self.copies.drop(key)
        # "live:..." is written on every save: the session key itself has timed out since.
        raise SessionNotFound(gone_message((reason or b"").decode().removeprefix("live:") or None))

    @_answered
    async def save(
        self, key: str, state: SessionState, expected_revision: int | None, limits: SessionLimits | None = None
    ) -> None:
        limits = limits or SessionLimits()
        idle = self.idle_timeout if limits.idle_timeout is None else limits.idle_timeout
        self._idle_by_model[state.model] = idle
        session, tombstone, _, model_index, owner_index = self._keys(key)
        owned = owner_of_key(key) is not None
        args = [
            "" if expected_revision is None else str(expected_revision),
            self._per_bucket(limits.max_sessions),
            self._per_bucket(limits.max_per_owner) if owned else -1,
            codec.encode(state),
            int(idle * 1000),
            max(_TOMBSTONE_TTL_MS, int(idle * 2000)),
            f"expired after {idle:g} s idle",
            str(state.generation),
        ]
        entry = ([session, tombstone, model_index, owner_index], args)
        if _SAVE not in self._shas:
            await self._load_script(_SAVE)
        try:
            result = await self._pipeline.call_in_group(self._bucket(key), entry)
        except redis.exceptions.NoScriptError:  # a fresh primary after a failover: nothing ran
            await self._load_script(_SAVE, again=True)
            result = await self._pipeline.call_in_group(self._bucket(key), entry)
        code = int(result[0])
        if code == 0:
            state.revision = int(result[1])
            state.last_used = time.time()
            self.copies.keep(key, state)
            return
        self.copies.drop(key)
        if code == -1:
            await self.load(key, fresh=True)  # raises the reason the session is gone
        if code == -2:
            assert expected_revision is not None
            raise self._conflict(result, expected_revision)
        what = {-3: "the server", -4: f"model '{state.model}'"}.get(code, f"API key '{owner_of_key(key)}'")
        raise LimitExceeded(
            f"{what} holds its maximum of sessions and none has been idle long enough to evict; "
            "retry later or end unused sessions"
        )

    def _merge_saves(self, pipe: Any, bucket: str, entries: list[tuple[list[str], list[Any]]]) -> tuple[int, Any]:
        """Queues one script call saving every session of one bucket queued in this turn of the loop."""
        keys = [f"{bucket}lru", f"{bucket}evictions"]
        grace = int(self.eviction_grace * 1000)
        args: list[Any] = [bucket, self._per_bucket(self.max_sessions), grace, min(_RENEWAL_MS, grace)]
        for session_keys, session_args in entries:
            keys += session_keys
            args += session_args
        pipe.execute_command("EVALSHA", self._shas[_SAVE], len(keys), *keys, *args)
        return 1, lambda results: results[0]

    @_answered
    async def delete(self, key: str, reason: str = "has ended", expected_revision: int | None = None) -> bool:
        self.copies.drop(key)
        expected = "" if expected_revision is None else str(expected_revision)
        result = await self._script(_DELETE, self._keys(key), [reason, _TOMBSTONE_TTL_MS, key, expected])
        if isinstance(result, list):
            assert expected_revision is not None
            raise self._conflict(result, expected_revision)
        return bool(result)

    @_answered
    async def count(self) -> int:
        return sum(await self._per_bucket_values("zcard", "lru"))

    @_answered
    async def sweep(self) -> int:
        """Redis drops idle sessions by TTL; this trims them from the LRU indexes (each model's by
        its own idle timeout, the server-wide one by the server's), drops local copies gone idle,
        and refreshes the counts /metrics reports."""
        now_s, now_us = await self.client.time()
        now_ms = now_s * 1000 + now_us // 1000
        indexes = [("lru", self.idle_timeout)] + [(f"lru:{m}", idle) for m, idle in self._idle_by_model.items()]
        trimmed = 0
        for bucket in self._bucket_prefixes():
            for index, idle in indexes:
                if idle > 0:
                    trimmed += await self._trim(bucket, index, now_ms - int(idle * 1000))
        if self.idle_timeout > 0:
            self.copies.drop_idle(time.time() - self.idle_timeout)
        self.active = sum(await self._per_bucket_values("zcard", "lru"))
        self.evictions = sum(int(v or 0) for v in await self._per_bucket_values("get", "evictions"))
        return trimmed

    async def _trim(self, bucket: str, index: str, cutoff_ms: int) -> int:
        """Drops, from every index, the sessions of `index` unused since `cutoff_ms` that are gone."""
        stale = [m.decode() for m in await self.client.zrangebyscore(f"{bucket}{index}", 0, cutoff_ms)]
        gone = [m for m in stale if not await self.client.exists(f"{bucket}s:{m}")]
        for member in gone:
            for key in self._keys(member)[2:]:
                await self.client.zrem(key, member)
        return len(gone)

    async def close(self) -> None:
        await self.client.aclose()

    # -- helpers -------------------------------------------------------------------------------

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
