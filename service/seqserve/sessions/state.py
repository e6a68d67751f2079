"""One session's record: the recurrent states of every layer for its batch, and its step counter.

The record is also what a state store keeps: the in-memory store keeps the object itself, Redis
its bytes (`seqserve.sessions.codec`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from seqserve.sessions.history import History, KeptState, history_nbytes
from seqserve.sessions.packed import nbytes as packed_nbytes
from seqserve.sessions.packed import pack


def new_generation() -> int:
    """A tag for a new run of a sequence: random, not secret (it tells runs apart, it guards nothing)."""
    return random.getrandbits(63) | 1


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
    # A digest of that step's request (`seqserve.sessions.steps.request_digest`): a retry carries the
    # same; another request reusing the step number does not, and is refused rather than answered.
    last_request: bytes | None = None
    last_used: float = field(default_factory=time.time)
    # Ended by a numbered last step: kept (without states) only to answer a retry of that step.
    ended: bool = False
    # Which run of the sequence this is: drawn when a sequence starts or its states are set
    # (`new_generation`), kept by every step that continues it. A copy behind the store on the same
    # generation missed steps made elsewhere; a different one means the session was restarted or replaced.
    generation: int = 0
    # The states after its last steps before this one, oldest first (`seqserve.sessions.history`):
    # kept only when its model's session_history is on, for rewind and fork from a past step.
    history: History = ()
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
        outputs = packed_nbytes(self.last_outputs) if self.last_outputs else 0
        self._nbytes = packed_nbytes(self.states) + outputs + history_nbytes(self.history)

    @property
    def nbytes(self) -> int:
        """What the record holds in arrays, its history included: what the memory limits count."""
        return self._nbytes

    @property
    def kept(self) -> KeptState:
        """Its current states as a history entry."""
        return KeptState(self.step, self.batch_size, self.states)
