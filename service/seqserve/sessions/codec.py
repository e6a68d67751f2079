"""A session record as the bytes Redis stores: a fixed binary header, then each group of arrays
(the states, and the answer a numbered step keeps) as a short JSON description and the raw bytes,
then, flagged in the header, the digest of a numbered step's request, then, flagged too, the
session's history (`seqserve.sessions.history`): a count, and per kept step its step number, batch
size and group of arrays. Readers that do not know a flag ignore what it adds (they see a session
without history); records written before a flag lack it and read as before.

Saved once per step, so it is made to be cheap: the description of a packed group is made once per
layout (`seqserve.sessions.packed`), the header is a struct, and the arrays are one copy of a
buffer.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

import numpy as np

from seqserve.sessions.history import History, KeptState
from seqserve.sessions.packed import PackedStates
from seqserve.sessions.state import SessionState

_MAGIC = b"SQS2"
# magic, model version, batch size, step, generation, last used, flags, model name length,
# states description length, states bytes, outputs description length, outputs bytes
_HEADER = struct.Struct("<4sqqqqdBIIQIQ")
_HAS_OUTPUTS, _ENDED, _HAS_REQUEST, _HAS_HISTORY = 1, 2, 4, 8
# per kept step: step, batch size, description length, bytes
_KEPT = struct.Struct("<qqIQ")
_COUNT = struct.Struct("<I")
REQUEST_DIGEST_BYTES = 16


def encode(state: SessionState) -> bytes:
    model = state.model.encode()
    states_description, states = _group(state.states)
    outputs_description, outputs = _group(state.last_outputs or {})
    flags = (_HAS_OUTPUTS if state.last_outputs is not None else 0) | (_ENDED if state.ended else 0)
    request = state.last_request or b""
    if request:
        assert len(request) == REQUEST_DIGEST_BYTES
        flags |= _HAS_REQUEST
    history = _history(state.history)
    if history:
        flags |= _HAS_HISTORY
    header = _HEADER.pack(
        _MAGIC, state.version, state.batch_size, state.step, state.generation, state.last_used, flags, len(model),
        len(states_description), len(states), len(outputs_description), len(outputs),
    )  # fmt: skip
    return b"".join((header, model, states_description, states, outputs_description, outputs, request, *history))


class UnreadableRecord(ValueError):
    """Stored bytes that are not a session record this version writes (another version's, or damaged)."""


def decode(blob: bytes) -> SessionState:
    if not blob.startswith(_MAGIC):
        raise UnreadableRecord(f"not a session record of this seqserve version (it starts {blob[:4]!r})")
    try:
        return _decode(blob)
    except (ValueError, TypeError, KeyError, struct.error) as e:  # truncated or damaged
        raise UnreadableRecord(f"a damaged session record ({type(e).__name__}: {e})") from None


def _decode(blob: bytes) -> SessionState:
    _, version, batch_size, step, generation, last_used, flags, *lengths = _HEADER.unpack_from(blob)
    view, offset = memoryview(blob), _HEADER.size
    model = bytes(view[offset : offset + lengths[0]]).decode()
    offset += lengths[0]
    states, offset = _ungroup(view, offset, lengths[1], lengths[2])
    outputs, offset = _ungroup(view, offset, lengths[3], lengths[4])
    request = None
    if flags & _HAS_REQUEST:
        request = bytes(view[offset : offset + REQUEST_DIGEST_BYTES])
        if len(request) != REQUEST_DIGEST_BYTES:
            raise ValueError("the request digest is cut short")
        offset += REQUEST_DIGEST_BYTES
    history = _unhistory(view, offset) if flags & _HAS_HISTORY else ()
    return SessionState(
        model=model,
        version=version,
        batch_size=batch_size,
        states=states,
        step=step,
        last_outputs=outputs if flags & _HAS_OUTPUTS else None,
        last_request=request,
        last_used=last_used,
        ended=bool(flags & _ENDED),
        generation=generation,
        history=history,
    )


def _history(history: History) -> list[bytes]:
    if not history:
        return []
    parts = [_COUNT.pack(len(history))]
    for kept in history:
        description, data = _group(kept.states)
        parts += [_KEPT.pack(kept.step, kept.batch_size, len(description), len(data)), description, data]
    return parts


def _unhistory(view: memoryview, offset: int) -> History:
    (count,) = _COUNT.unpack_from(view, offset)
    offset += _COUNT.size
    kept = []
    for _ in range(count):
        step, batch_size, description_length, length = _KEPT.unpack_from(view, offset)
        states, offset = _ungroup(view, offset + _KEPT.size, description_length, length)
        kept.append(KeptState(step, batch_size, states))
    return tuple(kept)


def _group(arrays: Mapping[str, np.ndarray]) -> tuple[bytes, bytes]:
    if not arrays:
        return b"", b""
    if isinstance(arrays, PackedStates):
        return arrays.serialized()
    # Arrays of different dtypes are not packed into one buffer: each described on its own.
    described = [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()]
    data = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())
    return json.dumps({"each": described}).encode(), data


def _ungroup(view: memoryview, offset: int, description_length: int, length: int) -> tuple[dict[str, np.ndarray], int]:
    if not description_length:
        return {}, offset
    description = json.loads(bytes(view[offset : offset + description_length]))
    offset += description_length
    if "each" in description:
        entries = [(name, np.dtype(dtype), shape) for name, dtype, shape in description["each"]]
    else:
        dtype = np.dtype(description["dtype"])
        entries = [(name, dtype, shape) for name, shape in description["arrays"]]
    arrays = {}
    for name, dtype, shape in entries:
        array = np.frombuffer(view, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)
        arrays[name] = array  # the record packs (copies) them
        offset += array.nbytes
    return arrays, offset
