"""Session states in Redis, shared by every replica and surviving a restart.

Each session is a hash {rev, blob} that expires after the idle timeout; every write is one Lua
script, so compare-and-set on the write revision, the LRU index and eviction are atomic even with
several replicas writing. A second key per session remembers why it is gone (ended, evicted, or,
when the session key vanished while this one still says "live", expired by its TTL).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import redis
import redis.asyncio as aioredis

from seqserve.errors import LimitExceeded, SessionConflict, SessionNotFound, StoreUnavailable
from seqserve.sessions.state import SessionState
from seqserve.sessions.stores import SessionLimits, StateStore, concurrent_write, gone_message

# KEYS: session, tombstone, server lru index, model lru index.
# ARGV: expected revision ("" = create or replace), model max sessions (0 = no bound), blob,
# idle ttl ms (0 = none), tombstone ttl ms, server max sessions, eviction grace ms, key prefix,
# what to say once the idle ttl has run out.
# Returns {0, new revision} or {negative code, ...}.
_SAVE = """
local current = redis.call('HGET', KEYS[1], 'rev')
if ARGV[1] ~= '' then
  if not current then return {-1} end
  if current ~= ARGV[1] then return {-2, tonumber(current)} end
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
      redis.call('INCR', ARGV[8] .. 'evictions')
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
redis.call('HSET', KEYS[1], 'rev', revision, 'blob', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) else redis.call('PERSIST', KEYS[1]) end
redis.call('SET', KEYS[2], 'live:' .. ARGV[9], 'PX', ARGV[5])
redis.call('ZADD', KEYS[3], now, member)
redis.call('ZADD', KEYS[4], now, member)
return {0, revision}
"""

# KEYS: session, tombstone, server lru index, model lru index.  ARGV: reason, tombstone ttl ms, member.
_DELETE = """
local existed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
if existed == 1 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return existed
"""

_TOMBSTONE_TTL_MS = 3_600_000
_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

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
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.client: Any = aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._sync: Any = None
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.eviction_grace = eviction_grace
        self.prefix = prefix
        self._save = self.client.register_script(_SAVE)
        self._delete = self.client.register_script(_DELETE)

    def _keys(self, key: str) -> list[str]:
        model = key.split("/", 1)[0]  # session keys are "<model>/<kind>:<id>"; model names hold no "/"
        return [f"{self.prefix}s:{key}", f"{self.prefix}t:{key}", f"{self.prefix}lru", f"{self.prefix}lru:{model}"]

    @_answered
    async def load(self, key: str) -> SessionState:
        session, tombstone, _, _ = self._keys(key)
        blob, revision = await self.client.hmget(session, ["blob", "rev"])
        if blob is not None:
            state = SessionState.from_bytes(blob)
            state.revision = int(revision)
            return state
        reason = (await self.client.get(tombstone) or b"").decode()
        # "live:..." is written on every save: the session key itself has timed out since.
        raise SessionNotFound(gone_message(reason.removeprefix("live:") or None))

    @_answered
    async def save(
        self, key: str, state: SessionState, expected_revision: int | None, limits: SessionLimits | None = None
    ) -> None:
        limits = limits or SessionLimits()
        idle = self.idle_timeout if limits.idle_timeout is None else limits.idle_timeout
        result = await self._save(
            keys=self._keys(key),
            args=[
                "" if expected_revision is None else str(expected_revision),
                limits.max_sessions or 0,
                state.to_bytes(),
                int(idle * 1000),
                max(_TOMBSTONE_TTL_MS, int(idle * 2000)),
                self.max_sessions,
                int(self.eviction_grace * 1000),
                self.prefix,
                f"expired after {idle:g} s idle",
            ],
        )
        code = int(result[0])
        if code == -1:
            await self.load(key)  # raises the reason the session is gone
        if code == -2:
            assert expected_revision is not None
            raise SessionConflict(concurrent_write(int(result[1]), expected_revision))
        if code in (-3, -4):
            what = "the server" if code == -3 else f"model '{state.model}'"
            raise LimitExceeded(
                f"{what} holds its maximum of sessions and none has been idle long enough to evict; "
                "retry later or end unused sessions"
            )
        state.revision = int(result[1])
        state.last_used = time.time()

    @_answered
    async def delete(self, key: str, reason: str = "has ended") -> bool:
        existed = await self._delete(keys=self._keys(key), args=[reason, _TOMBSTONE_TTL_MS, key])
        return bool(existed)

    @_answered
    async def count(self) -> int:
        return int(await self.client.zcard(f"{self.prefix}lru"))

    # Read by the Prometheus collector at scrape time, which is synchronous: a small blocking client.
    # A scrape while Redis is unreachable reports no value rather than failing the scrape.
    @property
    def active(self) -> int | None:
        try:
            return int(self._sync_client().zcard(f"{self.prefix}lru"))
        except _UNREACHABLE:
            return None

    @property
    def evictions(self) -> int | None:
        try:
            return int(self._sync_client().get(f"{self.prefix}evictions") or 0)
        except _UNREACHABLE:
            return None

    def _sync_client(self) -> Any:
        if self._sync is None:
            pool = redis.ConnectionPool.from_url(
                self.url, max_connections=1, socket_timeout=1.0, socket_connect_timeout=1.0
            )
            self._sync = redis.Redis(connection_pool=pool)
        return self._sync

    @_answered
    async def sweep(self) -> int:
        """Redis drops idle sessions by TTL; this only trims them from the LRU index."""
        if self.idle_timeout <= 0:
            return 0
        now_s, now_us = await self.client.time()
        cutoff = now_s * 1000 + now_us // 1000 - int(self.idle_timeout * 1000)
        lru = f"{self.prefix}lru"
        stale = await self.client.zrangebyscore(lru, 0, cutoff)
        gone = [m.decode() for m in stale if not await self.client.exists(f"{self.prefix}s:{m.decode()}")]
        for member in gone:
            await self.client.zrem(lru, member)
            await self.client.zrem(self._keys(member)[3], member)
        return len(gone)

    async def close(self) -> None:
        await self.client.aclose()
        if self._sync is not None:
            self._sync.close()
