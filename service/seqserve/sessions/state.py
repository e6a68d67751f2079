"""One session's record: the recurrent states of every layer for its batch, and its step counter.

The record is also what a state store keeps, so it serialises to one compact byte string (a JSON
header and the raw arrays) for Redis; the in-memory store keeps the object itself.
"""

from __future__ import annotations

import json
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from seqserve.sessions.packed import nbytes as packed_nbytes
from seqserve.sessions.packed import pack

_HEADER = struct.Struct("<I")


@dataclass(slots=True)  # no per-record __dict__: an idle session costs its states plus < 1 KiB
class SessionState:
    model: str
    version: int
    batch_size: int
    # Copied into one buffer when the record is made (seqserve.sessions.packed): read-only views.
    states: Mapping[str, np.ndarray]
    # Requests applied so far. A client's `sequence_step` k names the k-th request of the session.
    step: int = 0
    # Writes so far, assigned by the store. Compare-and-set uses this, not `step`: a sequence start
    # resets `step` and a state import keeps it, so `step` alone would let a stale writer through.
    revision: int = 0
    # The answer to the last applied step, kept only when the client numbers its steps, so a retry
    # of that step gets the same answer instead of advancing the state twice.
    last_outputs: Mapping[str, np.ndarray] | None = None
    last_used: float = field(default_factory=time.time)
    # Ended by a numbered last step: kept (without states) only to answer a retry of that step.
    ended: bool = False
    # Which run of the sequence this is: drawn when a sequence starts or its states are set, kept by
    # every step that continues it. A copy behind the store on the same generation missed steps
    # made elsewhere; a different generation means the session was restarted or replaced.
    generation: int = field(default_factory=lambda: secrets.randbits(63))
    # Served from a replica's own copy rather than read from the store: possibly stale (not stored).
    from_copy: bool = field(default=False, repr=False, compare=False)
    _nbytes: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        # The record owns its arrays: whatever they were views of (a whole batch) is not kept alive.
        self.states = pack(self.states)
        if self.last_outputs is not None:
            self.last_outputs = pack(self.last_outputs)
        # Counted once: a record is never changed in place (a new step makes a new record), and the
        # store's byte accounting must see the same size when a record is added and when it is dropped.
        self._nbytes = packed_nbytes(self.states) + (packed_nbytes(self.last_outputs) if self.last_outputs else 0)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def to_bytes(self) -> bytes:
        arrays = [("s", k, v) for k, v in self.states.items()]
        arrays += [("o", k, v) for k, v in (self.last_outputs or {}).items()]
        header = {
            "model": self.model,
            "version": self.version,
            "batch_size": self.batch_size,
            "step": self.step,
            "last_used": self.last_used,
            "has_outputs": self.last_outputs is not None,
            "ended": self.ended,
            "generation": self.generation,
            "arrays": [[kind, name, str(a.dtype), list(a.shape)] for kind, name, a in arrays],
        }
        encoded = json.dumps(header).encode()
        body = b"".join(np.ascontiguousarray(a).tobytes() for _, _, a in arrays)
        return _HEADER.pack(len(encoded)) + encoded + body

    @classmethod
    def from_bytes(cls, blob: bytes) -> SessionState:
        (length,) = _HEADER.unpack_from(blob)
        header = json.loads(blob[_HEADER.size : _HEADER.size + length])
        offset = _HEADER.size + length
        states: dict[str, np.ndarray] = {}
        outputs: dict[str, np.ndarray] = {}
        for kind, name, dtype, shape in header["arrays"]:
            count = int(np.prod(shape))
            array = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(shape)  # packing copies
            offset += array.nbytes
            (states if kind == "s" else outputs)[name] = array
        return cls(
            model=header["model"],
            version=header["version"],
            batch_size=header["batch_size"],
            states=states,
            step=header["step"],
            last_outputs=outputs if header["has_outputs"] else None,
            last_used=header["last_used"],
            ended=header.get("ended", False),
            generation=header.get("generation", 0),
        )
