"""The session manager's turns: one request of a session at a time, in arrival order, bounded, and
nothing left behind when a waiting request is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from seqserve.errors import SessionConflict
from seqserve.sessions.control import SequenceControl
from seqserve.sessions.manager import SessionManager
from seqserve.sessions.stores import MemoryStateStore

KEY, CONTROL = "m/u:1", SequenceControl(1)


async def test_requests_of_one_session_run_one_at_a_time_in_arrival_order() -> None:
    manager = SessionManager(MemoryStateStore())
    order, running = [], []

    async def request(i: int) -> None:
        async with manager.exclusive(KEY, CONTROL):
            running.append(i)
            assert len(running) == 1
            await asyncio.sleep(0.001)
            order.append(i)
            running.remove(i)

    await asyncio.gather(*(request(i) for i in range(6)))
    assert order == list(range(6))
    assert manager.active_keys == 0


async def test_different_sessions_do_not_wait_for_each_other() -> None:
    manager = SessionManager(MemoryStateStore())
    async with manager.exclusive("m/u:1", CONTROL), manager.exclusive("m/u:2", SequenceControl(2)):
        assert manager.active_keys == 2
    assert manager.active_keys == 0


async def test_more_waiting_requests_than_allowed_are_refused() -> None:
    manager = SessionManager(MemoryStateStore(), max_pending=2)
    release = asyncio.Event()

    async def hold() -> None:
        async with manager.exclusive(KEY, CONTROL):
            await release.wait()

    held = [asyncio.create_task(hold()) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(SessionConflict, match="already has 2 requests in flight"):
        async with manager.exclusive(KEY, CONTROL):
            pass
    release.set()
    await asyncio.gather(*held)
    assert manager.active_keys == 0


@pytest.mark.parametrize("others_waiting", [0, 1])
async def test_a_cancelled_waiting_request_leaves_its_place(others_waiting: int) -> None:
    manager = SessionManager(MemoryStateStore())
    release, done = asyncio.Event(), []

    async def hold() -> None:
        async with manager.exclusive(KEY, CONTROL):
            await release.wait()

    async def wait(i: int) -> None:
        async with manager.exclusive(KEY, CONTROL):
            done.append(i)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(wait(0))
    others = [asyncio.create_task(wait(i + 1)) for i in range(others_waiting)]
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()  # the holder releases before the cancelled request has unwound
    await asyncio.gather(holder, *others)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert done == list(range(1, others_waiting + 1))
    assert manager.active_keys == 0
    async with manager.exclusive(KEY, CONTROL):  # the session is free again
        pass


async def test_a_request_cancelled_as_its_turn_comes_passes_the_turn_on() -> None:
    manager = SessionManager(MemoryStateStore())
    release, done, waiters = asyncio.Event(), [], []

    async def hold() -> None:
        async with manager.exclusive(KEY, CONTROL):
            await release.wait()
        waiters[0].cancel()  # the first waiter has just been handed the turn and has not run yet

    async def wait(i: int) -> None:
        async with manager.exclusive(KEY, CONTROL):
            done.append(i)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiters += [asyncio.create_task(wait(1)), asyncio.create_task(wait(2))]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holder, waiters[1])
    assert waiters[0].cancelled()
    assert done == [2]
    assert manager.active_keys == 0
