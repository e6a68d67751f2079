"""Session states in Redis, shared by every replica and surviving a restart.

Each session is a hash {rev, blob} that expires after the idle timeout; every write is one Lua
script, so compare-and-set on the write revision, the LRU index and eviction are atomic even with
several replicas writing. A second key per session remembers why it is gone (ended, evicted, or,
when the session key vanished while this one still says "live", expired by its TTL).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from seqserve.errors import LimitExceeded, SessionConflict, SessionNotFound
from seqserve.sessions.state import SessionState
from seqserve.sessions.stores import StateStore, concurrent_write, gone_message

# KEYS: session, tombstone, lru index.  ARGV: expected revision ("" = create or replace), unused, blob,
# idle ttl ms (0 = none), tombstone ttl ms, max sessions, eviction grace ms, key prefix.
# Returns {0, new revision} or {negative code, ...}.
_SAVE = """
local current = redis.call('HGET', KEYS[1], 'rev')
if ARGV[1] ~= '' then
  if not current then return {-1} end
  if current ~= ARGV[1] then return {-2, tonumber(current)} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not current then
  local max = tonumber(ARGV[6])
  while redis.call('ZCARD', KEYS[3]) >= max do
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    local victim = ARGV[8] .. 's:' .. oldest[1]
    if redis.call('EXISTS', victim) == 1 then
      if now - tonumber(oldest[2]) < tonumber(ARGV[7]) then return {-3} end
      redis.call('DEL', victim)
      redis.call('SET', ARGV[8] .. 't:' .. oldest[1],
        'was evicted to make room for newer sessions (least recently used)', 'PX', ARGV[5])
      redis.call('INCR', ARGV[8] .. 'evictions')
    end
    redis.call('ZREM', KEYS[3], oldest[1])
  end
end
local revision = (tonumber(current) or 0) + 1
redis.call('HSET', KEYS[1], 'rev', revision, 'blob', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
redis.call('SET', KEYS[2], 'live', 'PX', ARGV[5])
redis.call('ZADD', KEYS[3], now, string.sub(KEYS[1], string.len(ARGV[8]) + 3))
return {0, revision}
"""

# KEYS: session, tombstone, lru index.  ARGV: reason, tombstone ttl ms, member.
_DELETE = """
local existed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[3])
if existed == 1 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return existed
"""

_TOMBSTONE_TTL_MS = 3_600_000


class RedisStateStore(StateStore):
    def __init__(
        self,
        url: str,
        max_sessions: int = 100_000,
        idle_timeout: float = 300.0,
        eviction_grace: float = 5.0,
        prefix: str = "seqserve:",
    ) -> None:
        self.client: Any = aioredis.from_url(url)
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.eviction_grace = eviction_grace
        self.prefix = prefix
        self._save = self.client.register_script(_SAVE)
        self._delete = self.client.register_script(_DELETE)

    def _keys(self, key: str) -> list[str]:
        return [f"{self.prefix}s:{key}", f"{self.prefix}t:{key}", f"{self.prefix}lru"]

    async def load(self, key: str) -> SessionState:
        session, tombstone, _ = self._keys(key)
        blob, revision = await self.client.hmget(session, ["blob", "rev"])
        if blob is not None:
            state = SessionState.from_bytes(blob)
            state.revision = int(revision)
            return state
        reason = await self.client.get(tombstone)
        if reason == b"live":  # written on every save: the session key itself timed out
            raise SessionNotFound(gone_message(f"expired after {self.idle_timeout:g} s idle"))
        raise SessionNotFound(gone_message(reason.decode() if reason else None))

    async def save(self, key: str, state: SessionState, expected_revision: int | None) -> None:
        keys = self._keys(key)
        result = await self._save(
            keys=keys,
            args=[
                "" if expected_revision is None else str(expected_revision),
                "",
                state.to_bytes(),
                int(self.idle_timeout * 1000),
                max(_TOMBSTONE_TTL_MS, int(self.idle_timeout * 2000)),
                self.max_sessions,
                int(self.eviction_grace * 1000),
                self.prefix,
            ],
        )
        code = int(result[0])
        if code == -1:
            await self.load(key)  # raises the reason the session is gone
        if code == -2:
            assert expected_revision is not None
            raise SessionConflict(concurrent_write(int(result[1]), expected_revision))
        if code == -3:
            raise LimitExceeded(
                f"the server holds its maximum of sessions ({self.max_sessions}) and none has been idle "
                "long enough to evict; retry later or end unused sessions"
            )

    async def delete(self, key: str, reason: str = "has ended") -> bool:
        existed = await self._delete(keys=self._keys(key), args=[reason, _TOMBSTONE_TTL_MS, key])
        return bool(existed)

    async def count(self) -> int:
        return int(await self.client.zcard(f"{self.prefix}lru"))

    async def sweep(self) -> int:
        """Redis drops idle sessions by TTL; this only trims them from the LRU index."""
        if self.idle_timeout <= 0:
            return 0
        now_s, now_us = await self.client.time()
        cutoff = now_s * 1000 + now_us // 1000 - int(self.idle_timeout * 1000)
        lru = f"{self.prefix}lru"
        stale = await self.client.zrangebyscore(lru, 0, cutoff)
        gone = [m for m in stale if not await self.client.exists(f"{self.prefix}s:{m.decode()}")]
        if gone:
            await self.client.zrem(lru, *gone)
        return len(gone)

    async def close(self) -> None:
        await self.client.aclose()
