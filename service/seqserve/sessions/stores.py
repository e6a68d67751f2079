"""Where session states live between requests: the StateStore interface and the in-memory store.

Stores are compare-and-set on the session's write revision, so that of two writers racing on one
session (a retry, a second replica) at most one advances it; the other gets SessionConflict.
A session that is gone answers *why* (ended, expired, evicted), never silently with zero state.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from seqserve.errors import LimitExceeded, SessionConflict, SessionNotFound
from seqserve.sessions.keys import owner_of_key
from seqserve.sessions.state import SessionState

# How many gone sessions are remembered to explain why they are gone.
_TOMBSTONES = 10_000


def _ignore(*_: object) -> None:
    return None


@dataclass
class StoreEvents:
    """What a store reports as it works (metrics subscribe); by default, nothing listens."""

    # (seconds, calls in it, shards it went to) of each round trip to a remote store
    round_trip: Callable[[float, int, int], None] = _ignore
    # a compare-and-set that lost: another writer advanced the session first
    conflict: Callable[[], None] = _ignore


class StateStore(abc.ABC):
    events: StoreEvents = StoreEvents()

    @abc.abstractmethod
    async def load(self, key: str, fresh: bool = False) -> SessionState:
        """The session's record; SessionNotFound saying why when there is none.

        A store may answer from a copy it keeps (marked `from_copy`, possibly stale: the save's
        compare-and-set finds out); `fresh` asks for the stored record itself."""

    @abc.abstractmethod
    async def save(
        self, key: str, state: SessionState, expected_revision: int | None, limits: SessionLimits | None = None
    ) -> None:
        """Writes `state` if the stored revision is still `expected_revision` (None: create or replace).

        Sets `state.revision` to the new revision. `limits` are the bounds of the state's model.
        """

    @abc.abstractmethod
    async def delete(self, key: str, reason: str = "has ended", expected_revision: int | None = None) -> bool:
        """Removes the session; later requests for it are told `reason`. With `expected_revision`,
        only if the stored revision is still that one (else SessionConflict)."""

    @abc.abstractmethod
    async def count(self) -> int: ...

    async def create_all(self, records: Sequence[tuple[str, SessionState]], limits: SessionLimits) -> None:
        """Creates new sessions, all of them or none: when one is refused (a limit), those written are
        deleted again before the error is raised. Their ids were never handed out, so no client can
        have used them in between. Written at once, so that Redis takes them in one round trip."""
        saves = [self.save(key, state, None, limits=limits) for key, state in records]
        outcomes = await asyncio.gather(*saves, return_exceptions=True)
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if not failed:
            return
        for (key, _), outcome in zip(records, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                await self.delete(key, reason="was never created (the request creating it was refused)")
        raise failed[0]

    async def sweep(self) -> int:
        """Drops expired sessions; returns how many. Stores that expire by themselves do nothing."""
        return 0

    def sessions_on(self, model: str, version: int) -> int | None:
        """How many sessions run on a model version (for unloading a removed one); None: unknown here."""
        return None

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class SessionLimits:
    """Bounds on the sessions of one model (from its config.yaml), besides the server-wide ones.

    None means no bound of the model's own; `idle_timeout` None means the server's.

    With API keys on (the session key names its owner: `seqserve.sessions.manager.session_key`), a
    new session may evict only a session of its own key: at `max_per_owner` its key's least recently
    used idle session goes; at the server's or its model's maximum it is refused, however idle other
    keys' sessions are, so a flood from one key cannot push out another's.
    """

    max_sessions: int | None = None
    max_bytes: int | None = None
    idle_timeout: float | None = None
    # With API keys on: the sessions one key may hold, over every model (its share of the server).
    max_per_owner: int | None = None
    # Past states each session keeps for rewind and fork (session_history; 0: none). Its bytes count
    # in max_bytes like the current states.
    history: int = 0


class _Pool:
    """Sessions under one set of bounds, least recently used first."""

    def __init__(self, what: str, max_sessions: int | None, max_bytes: int | None, idle_timeout: float) -> None:
        self.what = what
        self.max_sessions, self.max_bytes, self.idle_timeout = max_sessions, max_bytes, idle_timeout
        self.sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.bytes = 0

    def full(self, extra_bytes: int, is_new: bool) -> bool:
        too_many = is_new and self.max_sessions is not None and len(self.sessions) >= self.max_sessions
        return too_many or (self.max_bytes is not None and self.bytes + extra_bytes > self.max_bytes)

    def expired(self, state: SessionState, now: float) -> bool:
        return self.idle_timeout > 0 and now - state.last_used > self.idle_timeout


class MemoryStateStore(StateStore):
    """A bounded in-process store: at most `max_sessions` sessions and `max_bytes` of state, and
    per model and per API key whatever its `SessionLimits` say.

    When full, the least recently used session (of the model, or of the server) is evicted if it
    has been idle at least `eviction_grace` seconds; otherwise the new session is refused, so a
    flood of new sessions cannot push out streams that are in use. With API keys, only a session of
    the same key (`SessionLimits`).
    """

    def __init__(
        self,
        max_sessions: int = 100_000,
        max_bytes: int = 1 << 30,
        idle_timeout: float = 300.0,
        eviction_grace: float = 5.0,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.eviction_grace = eviction_grace
        self._all = _Pool("the server", max_sessions, max_bytes, idle_timeout)
        self._models: dict[str, _Pool] = {}
        self._owners: dict[str, _Pool] = {}
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._per_version: Counter[tuple[str, int]] = Counter()
        self.evictions = 0
        self.expiries = 0

    @property
    def bytes_used(self) -> int:
        return self._all.bytes

    @property
    def active(self) -> int:
        return len(self._all.sessions)

    async def load(self, key: str, fresh: bool = False) -> SessionState:
        state = self._all.sessions.get(key)
        if state is None:
            raise SessionNotFound(self._why_gone(key))
        pool = self._models[state.model]
        if pool.expired(state, time.time()):
            self._drop(key, f"expired after {pool.idle_timeout:g} s idle")
            self.expiries += 1
            raise SessionNotFound(self._why_gone(key))
        return state

    async def save(
        self, key: str, state: SessionState, expected_revision: int | None, limits: SessionLimits | None = None
    ) -> None:
        current = self._all.sessions.get(key)
        if expected_revision is not None:
            if current is None:
                raise SessionNotFound(self._why_gone(key))
            if current.revision != expected_revision:
                self.events.conflict()
                raise SessionConflict(concurrent_write(current.revision, expected_revision), current.generation)
        limits = limits or SessionLimits()
        pool = self._model_pool(state.model, limits)
        owner = owner_of_key(key)
        pools = (pool, self._all) if owner is None else (self._owner_pool(owner, limits), pool, self._all)
        old_bytes = current.nbytes if current is not None else 0
        extra = state.nbytes - old_bytes
        for bounds in pools:
            # With an owner, only its own pool may evict: the others hold other keys' sessions.
            self._make_room(bounds, key, extra, is_new=current is None, may_evict=owner is None or bounds is pools[0])
        state.revision = (current.revision if current is not None else 0) + 1
        state.last_used = time.time()
        for bounds in pools:
            bounds.sessions[key] = state
            bounds.sessions.move_to_end(key)
            bounds.bytes += extra
        if current is not None:
            self._uncount(current)
        if not state.ended:  # an ended record only answers a retry of its last step
            self._per_version[(state.model, state.version)] += 1
        self._gone.pop(key, None)

    async def delete(self, key: str, reason: str = "has ended", expected_revision: int | None = None) -> bool:
        current = self._all.sessions.get(key)
        if current is None:
            return False
        if expected_revision is not None and current.revision != expected_revision:
            self.events.conflict()
            raise SessionConflict(concurrent_write(current.revision, expected_revision), current.generation)
        self._drop(key, reason)
        return True

    async def count(self) -> int:
        return len(self._all.sessions)

    def sessions_on(self, model: str, version: int) -> int:
        return self._per_version[(model, version)]

    def _uncount(self, state: SessionState) -> None:
        if state.ended:
            return
        key = (state.model, state.version)
        self._per_version[key] -= 1
        if not self._per_version[key]:
            del self._per_version[key]

    async def sweep(self) -> int:
        now, dropped = time.time(), 0
        for pool in list(self._models.values()):
            # Oldest first: stop at the first session of the model still in use.
            for key, state in list(pool.sessions.items()):
                if not pool.expired(state, now):
                    break
                self._drop(key, f"expired after {pool.idle_timeout:g} s idle")
                dropped += 1
        self.expiries += dropped
        return dropped

    def _model_pool(self, model: str, limits: SessionLimits) -> _Pool:
        pool = self._models.get(model)
        if pool is None:
            pool = self._models[model] = _Pool(f"model '{model}'", None, None, self.idle_timeout)
        # A model's config.yaml may change while serving: its latest bounds apply.
        pool.max_sessions, pool.max_bytes = limits.max_sessions, limits.max_bytes
        pool.idle_timeout = self.idle_timeout if limits.idle_timeout is None else limits.idle_timeout
        return pool

    def _owner_pool(self, owner: str, limits: SessionLimits) -> _Pool:
        pool = self._owners.get(owner)
        if pool is None:
            pool = self._owners[owner] = _Pool(f"API key '{owner}'", None, None, self.idle_timeout)
        pool.max_sessions = limits.max_per_owner  # the share changes with the number of keys
        return pool

    def _make_room(self, pool: _Pool, key: str, extra_bytes: int, is_new: bool, may_evict: bool = True) -> None:
        if pool.max_bytes is not None and extra_bytes > pool.max_bytes:
            raise LimitExceeded(
                f"session state of {extra_bytes} bytes exceeds the {pool.max_bytes} bytes allowed for {pool.what}"
            )
        while pool.full(extra_bytes, is_new):
            now = time.time()
            oldest_key, oldest = next(((k, s) for k, s in pool.sessions.items() if k != key), (None, None))
            if oldest_key is not None and oldest is not None and not may_evict and pool.expired(oldest, now):
                self._drop(oldest_key, f"expired after {pool.idle_timeout:g} s idle")
                self.expiries += 1
                continue
            if not may_evict or oldest_key is None or oldest is None or now - oldest.last_used < self.eviction_grace:
                raise LimitExceeded(
                    f"{pool.what} holds its maximum of sessions ({len(pool.sessions)}, {pool.bytes} state bytes) "
                    "and none has been idle long enough to evict; retry later or end unused sessions"
                )
            self._drop(oldest_key, "was evicted to make room for newer sessions (least recently used)")
            self.evictions += 1

    def _drop(self, key: str, reason: str) -> None:
        state = self._all.sessions.pop(key)
        self._all.bytes -= state.nbytes
        owner = owner_of_key(key)
        for pool in (self._models[state.model], *([] if owner is None else [self._owners[owner]])):
            del pool.sessions[key]
            pool.bytes -= state.nbytes
        self._uncount(state)
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
