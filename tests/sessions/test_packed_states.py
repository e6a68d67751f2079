"""A record's states packed into one buffer: the same arrays to read, its own memory, read-only."""

from __future__ import annotations

import numpy as np
import pytest

from seqserve.sessions import codec
from seqserve.sessions.packed import NO_STATES, PackedStates, nbytes, pack
from seqserve.sessions.state import SessionState


def _states(batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "lstm.h": rng.standard_normal((batch, 4), dtype=np.float32),
        "lstm.c": rng.standard_normal((batch, 4), dtype=np.float32),
        "conv.h": rng.standard_normal((batch, 3, 3, 2), dtype=np.float32),
    }


def test_packed_states_read_back_equal_in_order() -> None:
    states = _states()
    packed = pack(states)
    assert isinstance(packed, PackedStates)
    assert list(packed) == list(states) and len(packed) == 3
    for name, value in states.items():
        np.testing.assert_array_equal(packed[name], value)
        assert packed[name].shape == value.shape and packed[name].dtype == value.dtype
    assert nbytes(packed) == sum(v.nbytes for v in states.values())
    with pytest.raises(KeyError):
        packed["missing"]


def test_packing_copies_so_the_batch_it_came_from_can_go() -> None:
    batch = np.arange(24, dtype=np.float32).reshape(6, 4)
    packed = pack({"h": batch[2:3], "c": batch[4:5]})
    batch[:] = -1
    np.testing.assert_array_equal(packed["h"], [[8, 9, 10, 11]])
    np.testing.assert_array_equal(packed["c"], [[16, 17, 18, 19]])
    assert not np.shares_memory(packed["h"], batch)


def test_packed_states_are_read_only() -> None:
    packed = pack(_states())
    with pytest.raises(ValueError, match="read-only"):
        packed["lstm.h"][0, 0] = 1.0


def test_states_of_different_dtypes_are_kept_apart_but_still_copied() -> None:
    source = {"h": np.ones((1, 2), np.float32), "count": np.ones((1, 1), np.int64)}
    kept = pack(source)
    source["h"][:] = 5
    assert not isinstance(kept, PackedStates)
    np.testing.assert_array_equal(kept["h"], [[1, 1]])
    assert nbytes(kept) == 8 + 8


def test_no_states_is_one_shared_empty_mapping() -> None:
    assert pack({}) is NO_STATES and not NO_STATES


def test_a_session_record_packs_states_and_kept_outputs() -> None:
    states = _states()
    outputs = {"y": np.ones((2, 5), np.float32)}
    record = SessionState(model="m", version=1, batch_size=2, states=states, last_outputs=outputs)
    assert isinstance(record.states, PackedStates) and isinstance(record.last_outputs, PackedStates)
    assert record.nbytes == sum(v.nbytes for v in states.values()) + 40
    copy = codec.decode(codec.encode(record))
    for name, value in states.items():
        np.testing.assert_array_equal(copy.states[name], value)
    assert copy.last_outputs is not None
    np.testing.assert_array_equal(copy.last_outputs["y"], outputs["y"])


def test_a_record_keeps_its_request_digest_and_one_written_without_it_reads_as_none() -> None:
    digest = bytes(range(codec.REQUEST_DIGEST_BYTES))
    outputs = {"y": np.ones((2, 5), np.float32)}
    record = SessionState(
        model="m", version=1, batch_size=2, states=_states(), last_outputs=outputs, last_request=digest
    )
    blob = codec.encode(record)
    assert codec.decode(blob).last_request == digest
    without = SessionState(model="m", version=1, batch_size=2, states=_states(), last_outputs=outputs)
    assert codec.decode(codec.encode(without)).last_request is None
    # Appended: an older reader stops before it.
    assert len(blob) == len(codec.encode(without)) + codec.REQUEST_DIGEST_BYTES
    with pytest.raises(codec.UnreadableRecord, match="cut short"):
        codec.decode(blob[:-1])
