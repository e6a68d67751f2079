"""A replica's own copies of the sessions it served from Redis, least recently used dropped first.

Bounded by count and by state bytes (like the memory store), so that a model with large states
cannot make a replica's copies outgrow its memory. A copy is only ever a shortcut: dropping one
costs the next step of its session a read.
"""

from __future__ import annotations

from collections import OrderedDict

from seqserve.sessions.state import SessionState


class SessionCopies:
    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0
        self._copies: OrderedDict[str, SessionState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._copies)

    def get(self, key: str) -> SessionState | None:
        state = self._copies.get(key)
        if state is not None:
            self._copies.move_to_end(key)
        return state

    def keep(self, key: str, state: SessionState) -> None:
        self.drop(key)
        if state.nbytes > self.max_bytes:
            return
        self._copies[key] = state
        self.bytes += state.nbytes
        while len(self._copies) > self.max_count or self.bytes > self.max_bytes:
            _, dropped = self._copies.popitem(last=False)
            self.bytes -= dropped.nbytes

    def drop(self, key: str) -> None:
        state = self._copies.pop(key, None)
        if state is not None:
            self.bytes -= state.nbytes

    def drop_idle(self, since: float) -> None:
        """Drops the copies not used since `since` (a time.time()): their sessions have expired."""
        for key in [k for k, state in self._copies.items() if state.last_used < since]:
            self.drop(key)
