"""A session's kept past (session_history): the window it keeps, the Redis record that carries it
(records written without it still read), and its bytes in the memory store's limits."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from seqserve.errors import InvalidInput, LimitExceeded
from seqserve.sessions import codec
from seqserve.sessions.history import KeptState, extended, kept_state
from seqserve.sessions.state import SessionState
from seqserve.sessions.stores import MemoryStateStore, SessionLimits


def _states(value: float) -> dict[str, np.ndarray]:
    return {"lstm.h": np.full((2, 4), value, np.float32), "lstm.c": np.full((2, 4), -value, np.float32)}


def _record(step: int, history: tuple[KeptState, ...] = ()) -> SessionState:
    return SessionState(
        model="lstm", version=1, batch_size=2, states=_states(step), step=step, generation=7, history=history
    )


def test_the_history_keeps_the_newest_steps() -> None:
    history: tuple[KeptState, ...] = ()
    for step in range(6):
        history = extended(history, KeptState(step, 2, _states(step)), keep=3)
    assert [k.step for k in history] == [3, 4, 5]
    assert extended(history, KeptState(6, 2, _states(6)), keep=0) == ()


def test_a_step_outside_the_window_names_the_steps_kept() -> None:
    history = tuple(KeptState(step, 2, _states(step)) for step in (3, 4, 5))
    current = KeptState(6, 2, _states(6))
    kept, older = kept_state(history, current, 4, "session 'x'", keep=3)
    assert kept.step == 4 and [k.step for k in older] == [3]
    assert float(kept.states["lstm.h"][0, 0]) == 4.0
    with pytest.raises(InvalidInput, match="step 2 of session 'x' is not kept: it keeps steps 3 to 6"):
        kept_state(history, current, 2, "session 'x'", keep=3)
    with pytest.raises(InvalidInput, match="only its current step 6"):
        kept_state((), current, 5, "session 'x'", keep=0)
    with pytest.raises(InvalidInput, match="'step'"):
        kept_state(history, current, -1, "session 'x'", keep=3)


def test_a_record_with_history_survives_the_codec() -> None:
    record = _record(5, tuple(KeptState(step, 2, _states(step)) for step in (3, 4)))
    record.last_request = b"r" * codec.REQUEST_DIGEST_BYTES
    read = codec.decode(codec.encode(record))
    assert [k.step for k in read.history] == [3, 4] and read.last_request == record.last_request
    for ours, theirs in zip(record.history, read.history, strict=True):
        assert theirs.batch_size == 2
        for name in ours.states:
            np.testing.assert_array_equal(ours.states[name], theirs.states[name])
    assert read.nbytes == record.nbytes


def test_a_record_written_without_history_still_reads() -> None:
    blob = codec.encode(_record(2))
    assert not blob[4 + 8 * 4 + 8] & 8  # the history flag, in the header's flags byte
    read = codec.decode(blob)
    assert read.history == () and read.step == 2
    np.testing.assert_array_equal(read.states["lstm.h"], _states(2)["lstm.h"])


def test_history_bytes_count_in_the_memory_limits() -> None:
    one = _record(1).nbytes
    with_history = _record(3, tuple(KeptState(step, 2, _states(step)) for step in (1, 2)))
    assert with_history.nbytes == 3 * one
    store = MemoryStateStore(max_bytes=2 * one)
    asyncio.run(store.save("lstm/s:a", _record(1), None, SessionLimits()))
    with pytest.raises(LimitExceeded):
        asyncio.run(store.save("lstm/s:b", with_history, None, SessionLimits()))
