"""A session's kept past (the per-model setting `session_history: N`): the states after each of its
last N steps before the current one, so that a client can rewind to one of them or fork from it.

The window is steps `step - N` to `step` (the current state is the record's own). Step 0 is the
state a session began with (zeros, the states it was created or started with), kept while it is in
the window. A rewind keeps the entries older than the step it goes back to, so a session can be
rewound again further back; the entries newer than it are dropped (that branch is abandoned).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from seqserve.errors import InvalidInput
from seqserve.sessions.packed import PackedStates, pack
from seqserve.sessions.packed import nbytes as packed_nbytes


@dataclass(frozen=True, slots=True)
class KeptState:
    """The states of a session after `step` (its batch size with them: a created session may have none yet)."""

    step: int
    batch_size: int
    states: Mapping[str, np.ndarray]
    nbytes: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        # Records are never changed in place, so a packed record's states are shared, not copied.
        if not isinstance(self.states, PackedStates):
            object.__setattr__(self, "states", pack(self.states))
        object.__setattr__(self, "nbytes", packed_nbytes(self.states))


History = tuple[KeptState, ...]


def extended(history: History, latest: KeptState, keep: int) -> History:
    """The history after one more step: `latest` (the state the step started from) added, at most
    `keep` entries kept, the oldest dropped first."""
    if keep <= 0:
        return ()
    return (*history, latest)[-keep:]


def kept_state(history: History, current: KeptState, step: int, what: str, keep: int) -> tuple[KeptState, History]:
    """The state after `step` and the history older than it; InvalidInput naming the steps kept.

    `what` names the session in the error ("session 'ab12...' of model 'chars'"), `keep` is its
    model's session_history setting (only to say how to keep more)."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidInput(f"'step' must be a step number (0 or more), not {step!r}")
    if step == current.step:
        return current, history
    for index, entry in enumerate(history):
        if entry.step == step:
            return entry, history[:index]
    first = history[0].step if history else current.step
    kept = f"steps {first} to {current.step}" if first < current.step else f"only its current step {current.step}"
    raise InvalidInput(
        f"step {step} of {what} is not kept: it keeps {kept} "
        f"(session_history is {keep} for its model; config.yaml sets how many past steps are kept)"
    )


def history_nbytes(history: History) -> int:
    return sum(entry.nbytes for entry in history)
