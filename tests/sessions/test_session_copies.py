"""A replica's copies of Redis sessions stay within their count and their bytes, least recently used
dropped first, and their byte count never drifts."""

from __future__ import annotations

import numpy as np

from seqserve.sessions.copies import SessionCopies
from seqserve.sessions.state import SessionState


def _state(units: int = 4, last_used: float = 100.0) -> SessionState:
    states = {"h": np.zeros((1, units), np.float32)}
    return SessionState(model="m", version=1, batch_size=1, states=states, step=1, last_used=last_used)


def test_the_least_recently_used_copies_go_first_by_count() -> None:
    copies = SessionCopies(max_count=2, max_bytes=1 << 20)
    for key in "abc":
        copies.keep(key, _state())
        if key == "b":
            assert copies.get("a") is not None  # "a" used again: "b" is now the oldest
    assert copies.get("b") is None and copies.get("a") is not None and copies.get("c") is not None


def test_copies_stay_within_their_bytes_and_count_them_exactly() -> None:
    one = _state().nbytes
    copies = SessionCopies(max_count=100, max_bytes=3 * one)
    for key in "abcd":
        copies.keep(key, _state())
    assert len(copies) == 3 and copies.bytes == 3 * one and copies.get("a") is None
    copies.keep("b", _state(units=8))  # replaced by a bigger one: "c" goes to make room
    assert copies.bytes == one + 2 * one and copies.get("c") is None
    copies.keep("huge", _state(units=64))  # larger than all the room there is: not kept, nothing dropped
    assert copies.get("huge") is None and len(copies) == 2
    copies.drop("b")
    copies.drop("b")
    assert copies.bytes == one


def test_idle_copies_are_dropped() -> None:
    copies = SessionCopies(max_count=10, max_bytes=1 << 20)
    copies.keep("old", _state(last_used=10.0))
    copies.keep("new", _state(last_used=50.0))
    copies.drop_idle(since=20.0)
    assert copies.get("old") is None and copies.get("new") is not None and copies.bytes == _state().nbytes
