"""With API keys on, a flood of new sessions from one key cannot push out another key's sessions:
at its share a key's new session evicts its own least recently used idle session, and at the
server's maximum it is refused, never paid for with another key's idle session. Both stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis

from seqserve.errors import LimitExceeded, SessionNotFound
from seqserve.sessions.keys import session_key
from seqserve.sessions.redis_store import RedisStateStore
from seqserve.sessions.state import SessionState
from seqserve.sessions.stores import MemoryStateStore, SessionLimits, StateStore


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[type]:
    made: list[StateStore] = []

    def make(max_sessions: int) -> StateStore:
        if request.param == "memory":
            store: StateStore = MemoryStateStore(max_sessions=max_sessions, eviction_grace=0)
        else:
            url = request.getfixturevalue("redis_url")
            with redis.Redis.from_url(url) as client:
                client.flushdb()
            store = RedisStateStore(url, max_sessions=max_sessions, eviction_grace=0)
        made.append(store)
        return store

    yield make  # type: ignore[misc]
    for store in made:
        await store.close()


def _state(model: str = "m") -> SessionState:
    return SessionState(model=model, version=1, batch_size=1, states={"h": np.zeros((1, 2), np.float32)})


async def _create(store: StateStore, owner: str, k: int, share: int) -> None:
    await store.save(session_key("m", k, owner), _state(), None, SessionLimits(max_per_owner=share))


async def _alive(store: StateStore, owner: str, k: int) -> bool:
    try:
        await store.load(session_key("m", k, owner), fresh=True)
        return True
    except SessionNotFound:
        return False


async def test_a_flooding_key_evicts_only_its_own_sessions_at_its_share(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(max_sessions=4)
    for k in range(2):
        await _create(store, "bob", k, share=2)
    for k in range(10):  # alice floods: each new one past her share evicts her own oldest
        await _create(store, "alice", k, share=2)
    assert [await _alive(store, "bob", k) for k in range(2)] == [True, True]
    assert [await _alive(store, "alice", k) for k in range(10)] == [False] * 8 + [True, True]
    with pytest.raises(SessionNotFound, match="evicted"):
        await store.load(session_key("m", 0, "alice"), fresh=True)


async def test_at_the_servers_maximum_a_key_is_refused_rather_than_evicting_another_keys_session(
    make_store,  # type: ignore[no-untyped-def]
) -> None:
    store = make_store(max_sessions=4)  # shares of 3 oversubscribe it: 2 keys x 3 > 4
    for k in range(3):
        await _create(store, "bob", k, share=3)
    await _create(store, "alice", 0, share=3)
    with pytest.raises(LimitExceeded, match="the server holds its maximum of sessions"):
        await _create(store, "alice", 1, share=3)
    assert [await _alive(store, "bob", k) for k in range(3)] == [True, True, True]
    assert await _alive(store, "alice", 0)


async def test_without_keys_the_least_recently_used_session_goes_as_before(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(max_sessions=2)
    for k in range(3):
        await store.save(session_key("m", k), _state(), None)
    assert [await _alive(store, None, k) for k in range(3)] == [False, True, True]  # type: ignore[arg-type]


async def test_sessions_that_expired_by_their_models_idle_timeout_leave_the_active_count(
    make_store,  # type: ignore[no-untyped-def]
) -> None:
    """A model's idle timeout shorter than the server's: once its sessions have expired, a sweep
    no longer counts them (with Redis, their LRU entries outlived them until the server's timeout)."""
    store = make_store(max_sessions=100)
    short = SessionLimits(idle_timeout=0.2)
    for k in range(3):
        await store.save(session_key("m", k), _state(), None, short)
    await store.save(session_key("n", 1), _state("n"), None)  # the server's 300 s
    await store.sweep()
    assert await store.count() == 4
    await asyncio.sleep(0.5)
    await store.sweep()
    assert await store.count() == 1
