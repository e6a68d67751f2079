"""Where session states live between requests: the StateStore interface and the in-memory store.

Stores are compare-and-set on the session's write revision, so that of two writers racing on one
session (a retry, a second replica) at most one advances it; the other gets SessionConflict.
A session that is gone answers *why* (ended, expired, evicted), never silently with zero state.
"""

from __future__ import annotations

import abc
import time
from collections import OrderedDict

from seqserve.errors import LimitExceeded, SessionConflict, SessionNotFound
from seqserve.sessions.state import SessionState

# How many gone sessions are remembered to explain why they are gone.
_TOMBSTONES = 10_000


class StateStore(abc.ABC):
    @abc.abstractmethod
    async def load(self, key: str) -> SessionState:
        """The session's record; SessionNotFound saying why when there is none."""

    @abc.abstractmethod
    async def save(self, key: str, state: SessionState, expected_revision: int | None) -> None:
        """Writes `state` if the stored revision is still `expected_revision` (None: create or replace).

        Sets `state.revision` to the new revision.
        """

    @abc.abstractmethod
    async def delete(self, key: str, reason: str = "has ended") -> bool:
        """Removes the session; later requests for it are told `reason`."""

    @abc.abstractmethod
    async def count(self) -> int: ...

    async def sweep(self) -> int:
        """Drops expired sessions; returns how many. Stores that expire by themselves do nothing."""
        return 0

    async def close(self) -> None:
        return None


class MemoryStateStore(StateStore):
    """A bounded in-process store: at most `max_sessions` sessions and `max_bytes` of state.

    When full, the least recently used session is evicted if it has been idle at least
    `eviction_grace` seconds; otherwise the new session is refused, so a flood of new sessions
    cannot push out streams that are in use.
    """

    def __init__(
        self,
        max_sessions: int = 100_000,
        max_bytes: int = 1 << 30,
        idle_timeout: float = 300.0,
        eviction_grace: float = 5.0,
    ) -> None:
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.eviction_grace = eviction_grace
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        self._bytes = 0
        self._gone: OrderedDict[str, str] = OrderedDict()
        self.evictions = 0
        self.expiries = 0

    @property
    def bytes_used(self) -> int:
        return self._bytes

    @property
    def active(self) -> int:
        return len(self._sessions)

    async def load(self, key: str) -> SessionState:
        state = self._sessions.get(key)
        if state is None:
            raise SessionNotFound(self._why_gone(key))
        if self._expired(state, time.time()):
            self._drop(key, f"expired after {self.idle_timeout:g} s idle")
            self.expiries += 1
            raise SessionNotFound(self._why_gone(key))
        return state

    async def save(self, key: str, state: SessionState, expected_revision: int | None) -> None:
        current = self._sessions.get(key)
        if expected_revision is not None:
            if current is None:
                raise SessionNotFound(self._why_gone(key))
            if current.revision != expected_revision:
                raise SessionConflict(concurrent_write(current.revision, expected_revision))
        state.revision = (current.revision if current is not None else 0) + 1
        state.last_used = time.time()
        old_bytes = current.nbytes if current is not None else 0
        self._make_room(key, state.nbytes - old_bytes, is_new=current is None)
        self._sessions[key] = state
        self._sessions.move_to_end(key)
        self._bytes += state.nbytes - old_bytes
        self._gone.pop(key, None)

    async def delete(self, key: str, reason: str = "has ended") -> bool:
        if key not in self._sessions:
            return False
        self._drop(key, reason)
        return True

    async def count(self) -> int:
        return len(self._sessions)

    async def sweep(self) -> int:
        now, dropped = time.time(), 0
        # Oldest first: stop at the first session still in use.
        for key, state in list(self._sessions.items()):
            if not self._expired(state, now):
                break
            self._drop(key, f"expired after {self.idle_timeout:g} s idle")
            dropped += 1
        self.expiries += dropped
        return dropped

    def _expired(self, state: SessionState, now: float) -> bool:
        return self.idle_timeout > 0 and now - state.last_used > self.idle_timeout

    def _make_room(self, key: str, extra_bytes: int, is_new: bool) -> None:
        if extra_bytes > self.max_bytes:
            raise LimitExceeded(f"session state of {extra_bytes} bytes exceeds the store's {self.max_bytes} bytes")
        now = time.time()
        while (is_new and len(self._sessions) >= self.max_sessions) or self._bytes + extra_bytes > self.max_bytes:
            oldest_key, oldest = next(((k, s) for k, s in self._sessions.items() if k != key), (None, None))
            if oldest_key is None or oldest is None or now - oldest.last_used < self.eviction_grace:
                raise LimitExceeded(
                    f"the server holds its maximum of sessions ({len(self._sessions)}, {self._bytes} state bytes) "
                    "and none has been idle long enough to evict; retry later or end unused sessions"
                )
            self._drop(oldest_key, "was evicted to make room for newer sessions (least recently used)")
            self.evictions += 1

    def _drop(self, key: str, reason: str) -> None:
        state = self._sessions.pop(key)
        self._bytes -= state.nbytes
        self._gone[key] = reason
        if len(self._gone) > _TOMBSTONES:
            self._gone.popitem(last=False)

    def _why_gone(self, key: str) -> str:
        return gone_message(self._gone.get(key))


def concurrent_write(stored: int, expected: int) -> str:
    return (
        f"session advanced concurrently (revision {stored}, this request read {expected}); not applied, state unchanged"
    )


def gone_message(reason: str | None) -> str:
    """The end of "sequence N of model M ...": why it is gone, and what the client must do."""
    return f"{reason or 'is unknown'} (a new sequence must be sent with sequence_start=true)"
