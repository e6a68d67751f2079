"""State records round-trip through bytes, and the memory store keeps its byte bound and counts."""

from __future__ import annotations

import numpy as np
import pytest

from seqserve.errors import LimitExceeded, SessionConflict
from seqserve.metrics import Metrics
from seqserve.sessions import codec
from seqserve.sessions.state import SessionState
from seqserve.sessions.stores import MemoryStateStore


def _state(step: int = 1, units: int = 4, outputs: bool = False) -> SessionState:
    rng = np.random.default_rng(step)
    return SessionState(
        model="m",
        version=3,
        batch_size=2,
        states={
            "lstm.h": rng.standard_normal((2, units)).astype(np.float32),
            "lstm.c": np.ones((2, units), np.float32),
        },
        step=step,
        last_outputs={"y": np.arange(6, dtype=np.int64).reshape(2, 3)} if outputs else None,
    )


@pytest.mark.parametrize("outputs", [False, True])
def test_a_state_record_round_trips_through_bytes(outputs: bool) -> None:
    state = _state(step=7, outputs=outputs)
    copy = codec.decode(codec.encode(state))
    assert (copy.model, copy.version, copy.batch_size, copy.step) == ("m", 3, 2, 7)
    for name, value in state.states.items():
        np.testing.assert_array_equal(copy.states[name], value)
    assert (copy.last_outputs is None) == (not outputs)
    if outputs:
        assert copy.last_outputs["y"].dtype == np.int64
        np.testing.assert_array_equal(copy.last_outputs["y"], state.last_outputs["y"])
    assert (copy.generation, copy.ended, copy.last_used) == (state.generation, state.ended, state.last_used)


def test_states_of_different_dtypes_round_trip_through_bytes() -> None:
    mixed = {"a": np.arange(3, dtype=np.float64).reshape(1, 3), "b": np.ones((1, 2), np.float32)}
    copy = codec.decode(codec.encode(SessionState("m", 1, 1, mixed, step=2, ended=True)))
    assert copy.ended and copy.states["a"].dtype == np.float64 and copy.states["b"].dtype == np.float32
    np.testing.assert_array_equal(copy.states["a"], mixed["a"])


def test_bytes_that_are_no_session_record_are_refused() -> None:
    with pytest.raises(codec.UnreadableRecord, match="not a session record"):
        codec.decode(b"\x10\x00\x00\x00{}")
    with pytest.raises(codec.UnreadableRecord, match="damaged"):
        codec.decode(codec.encode(_state())[:-5])


async def test_the_memory_store_is_bounded_in_bytes() -> None:
    one = _state().nbytes
    store = MemoryStateStore(max_bytes=2 * one, eviction_grace=0)
    await store.save("a", _state(), None)
    await store.save("b", _state(), None)
    await store.save("c", _state(), None)  # evicts "a"
    assert store.bytes_used == 2 * one and store.evictions == 1
    with pytest.raises(LimitExceeded, match="exceeds the .* bytes allowed for the server"):
        await store.save("big", _state(units=64), None)


async def test_compare_and_set_refuses_a_stale_writer() -> None:
    store = MemoryStateStore()
    first = _state(step=1)
    await store.save("a", first, None)
    assert first.revision == 1
    await store.save("a", _state(step=2), expected_revision=1)
    with pytest.raises(SessionConflict, match="revision 2, this request read 1"):
        await store.save("a", _state(step=2), expected_revision=1)
    # A restart resets the step counter but not the revision: a writer that read before it still loses.
    await store.save("a", _state(step=1), None)
    with pytest.raises(SessionConflict, match="revision 3, this request read 2"):
        await store.save("a", _state(step=3), expected_revision=2)


async def test_session_counts_are_exported_as_metrics() -> None:
    store = MemoryStateStore(max_sessions=1, eviction_grace=0)
    metrics = Metrics()
    metrics.watch_sessions(store)
    await store.save("a", _state(), None)
    await store.save("b", _state(), None)
    text = metrics.exposition().decode()
    assert "seqserve_sessions_active 1.0" in text
    assert "seqserve_session_evictions_total 1.0" in text
    assert "seqserve_session_expiries_total 0.0" in text
