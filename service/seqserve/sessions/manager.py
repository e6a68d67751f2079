"""The session manager: applies the requests of one session one at a time, in arrival order.

Within a process each busy session has a FIFO queue of waiting requests (bounded); across replicas
the store's compare-and-set on the write revision makes sure at most one writer advances a session.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

from seqserve.errors import SessionConflict
from seqserve.sessions.control import SequenceControl
from seqserve.sessions.stores import StateStore


class _Slot:
    """A busy session: how many requests hold or wait for it, and the waiters' turns in order."""

    __slots__ = ("holders", "waiting")

    def __init__(self) -> None:
        self.holders = 1  # the request running plus those waiting
        self.waiting: deque[asyncio.Future[None]] | None = None  # made when a second request comes


class SessionManager:
    def __init__(self, store: StateStore, max_pending: int = 16) -> None:
        self.store = store
        self.max_pending = max_pending
        self._slots: dict[str, _Slot] = {}

    def exclusive(self, key: str, control: SequenceControl) -> _Turn:
        """Holds the session for one request (`async with`); later requests of it wait their turn."""
        return _Turn(self, key, control)

    @property
    def active_keys(self) -> int:
        return len(self._slots)

    def _release(self, key: str, slot: _Slot) -> None:
        slot.holders -= 1
        while slot.waiting:
            turn = slot.waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the next request runs; it counts among the holders already
                return
        if slot.holders == 0:
            del self._slots[key]

    def _leave(self, key: str, slot: _Slot, turn: asyncio.Future[None]) -> None:
        """A waiting request gave up (cancelled). A release may have skipped its turn already."""
        if slot.waiting is not None and turn in slot.waiting:
            slot.waiting.remove(turn)
        slot.holders -= 1
        if slot.holders == 0 and self._slots.get(key) is slot:
            del self._slots[key]


class _Turn:
    """One request's hold on a session. A hand-written context manager: a session that is not busy
    (the common case, one stream per session) is taken without creating a lock or a future."""

    __slots__ = ("_manager", "_key", "_control", "_slot")

    def __init__(self, manager: SessionManager, key: str, control: SequenceControl) -> None:
        self._manager, self._key, self._control = manager, key, control

    async def __aenter__(self) -> None:
        slots = self._manager._slots
        slot = slots.get(self._key)
        if slot is None:
            self._slot = slots[self._key] = _Slot()
            return
        if slot.holders >= self._manager.max_pending:
            raise SessionConflict(
                f"{self._control.describe()} already has {slot.holders} requests in flight; "
                "send the steps of one sequence one after another"
            )
        self._slot = slot
        slot.holders += 1
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if slot.waiting is None:
            slot.waiting = deque()
        slot.waiting.append(turn)
        try:
            await turn
        except BaseException:
            if turn.cancelled():
                self._manager._leave(self._key, slot, turn)
            else:  # cancelled just as the turn came: pass it on
                self._manager._release(self._key, slot)
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._manager._release(self._key, self._slot)
