"""The session manager: applies the requests of one session one at a time, in arrival order.

Within a process an asyncio.Lock per session queues them (FIFO, bounded); across replicas the
store's compare-and-set on the step counter makes sure at most one writer advances a session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from seqserve.errors import SessionConflict
from seqserve.sessions.control import SequenceControl
from seqserve.sessions.stores import StateStore


@dataclass
class _Slot:
    lock: asyncio.Lock
    holders: int = 0  # the request running plus those waiting


def session_key(model: str, sequence_id: int | str) -> str:
    """Integer and string ids live apart (uint64 42 is not "42"), each inside its model."""
    kind = "u" if isinstance(sequence_id, int) else "s"
    return f"{model}/{kind}:{sequence_id}"


class SessionManager:
    def __init__(self, store: StateStore, max_pending: int = 16) -> None:
        self.store = store
        self.max_pending = max_pending
        self._slots: dict[str, _Slot] = {}

    @asynccontextmanager
    async def exclusive(self, key: str, control: SequenceControl) -> AsyncIterator[None]:
        """Holds the session for one request; later requests of it wait their turn."""
        slot = self._slots.setdefault(key, _Slot(asyncio.Lock()))
        if slot.holders >= self.max_pending:
            raise SessionConflict(
                f"{control.describe()} already has {slot.holders} requests in flight; "
                "send the steps of one sequence one after another"
            )
        slot.holders += 1
        try:
            async with slot.lock:
                yield
        finally:
            slot.holders -= 1
            if slot.holders == 0:
                del self._slots[key]

    @property
    def active_keys(self) -> int:
        return len(self._slots)
