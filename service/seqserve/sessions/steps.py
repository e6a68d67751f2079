"""The session step protocol: how one request of a sequence is applied, written down once.

Every front end (REST, gRPC unary and streaming) reaches it through `DataPlane.infer`, which goes
through these phases in this order; the order is what makes a step safe to retry and a session safe
to share between replicas:

1. Turn. The session is held for this request (`SessionManager.exclusive`): its requests apply one
   at a time, in arrival order. Every phase below happens inside the turn.
2. Load (`SequenceStep.begin`). A start (`sequence_start`) reads nothing: what was stored is
   replaced. A continue loads the record; an unknown, expired, evicted or ended session is
   NOT_FOUND saying which (an ended record only answers a retry of its own last numbered step).
3. Pin (`pinned_version`, `check_version`). A continued session runs on the model version it
   started on; a request naming another version is refused.
4. Replay or gap (`replay`; numbered steps only, `sequence_step`). The step applied last, sent
   again with the same inputs (`request_digest`), comes back with its stored answer and the state
   untouched; the same number with other inputs is not a retry and is ABORTED, as is any number but
   the next; a start is step 1.
5. States (`states`). A start runs from zeros, or from the states sent with it; a continue from the
   stored states, at the batch size its first request set.
6. Run: the caller's.
7. Save (`save`), before the answer leaves. An unnumbered end deletes the record; anything else
   writes the new one (its states, the step count, and for a numbered step its answer, for a
   retry), compare-and-set on the revision read in 2: of two writers racing (a retry on another
   replica), one wins and the other gets ABORTED, and nothing is half-applied. A failure in any
   phase leaves the stored session as it was.
   With the model's `session_history` on, the record also keeps the states this step started
   from (phase 5) in its history, for rewind and fork (`seqserve.sessions.history`).

A store may answer phase 2 from a copy this replica kept (Redis: no read for a continuing step).
Such a copy is stale when another replica served a step since; then the gap check (4) or the
compare-and-set (7) fails, and instead of refusing the step they raise `StaleCopy`: the caller
loads the stored record and applies the step again from phase 2, once. A conflict found on a
record just read from the store is a real race, and is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from seqserve.errors import InvalidInput, SessionConflict, SessionNotFound
from seqserve.inference import Tensor
from seqserve.sessions.codec import REQUEST_DIGEST_BYTES
from seqserve.sessions.control import SEQUENCE_STEP, SequenceControl
from seqserve.sessions.history import History, KeptState, extended
from seqserve.sessions.state import SessionState, new_generation
from seqserve.sessions.stores import SessionLimits, StateStore, gone_message
from seqserve.store.signature import Signature
from seqserve.validation import validate_states

Arrays = Mapping[str, np.ndarray]


class StaleCopy(SessionConflict):
    """The step was checked against this replica's copy of the session, which is out of date:
    load the stored record and apply the step again (never reaches a client unless that fails too)."""


async def load_record(
    store: StateStore,
    key: str,
    model: str,
    control: SequenceControl,
    replaying_end: bool = False,
    fresh: bool = False,
) -> SessionState:
    """The session's record; NOT_FOUND saying why there is none. An ended record is returned only
    to answer a retry of its last numbered step (`replaying_end`)."""
    try:
        state = await store.load(key, fresh=fresh)
    except SessionNotFound as e:
        raise SessionNotFound(f"{control.describe()} of model '{model}' {e}") from None
    if state.ended and not (replaying_end and control.step == state.step):
        raise SessionNotFound(f"{control.describe()} of model '{model}' {gone_message('has ended')}")
    return state


def request_digest(inputs: Sequence[Tensor], end: bool) -> bytes:
    """What tells a retry of a numbered step from another request reusing its number: the inputs'
    names, types, shapes and bytes, and whether it ends the sequence."""
    digest = hashlib.blake2b(digest_size=REQUEST_DIGEST_BYTES)
    for tensor in sorted(inputs, key=lambda t: t.name):
        data = tensor.data
        digest.update(f"{tensor.name}\0{tensor.datatype}\0{data.shape}\0".encode())
        if data.dtype == object:  # BYTES: each element with its length, so boundaries count
            for item in data.ravel():
                raw = item if isinstance(item, bytes) else str(item).encode()
                digest.update(len(raw).to_bytes(8, "little") + raw)
        else:
            digest.update(np.ascontiguousarray(data).data)
    digest.update(b"end" if end else b"go on")
    return digest.digest()


class SequenceStep:
    """One request of a sequence, from its load to its save (the module docstring gives the order)."""

    __slots__ = ("store", "key", "control", "model", "previous", "request", "start")

    def __init__(
        self, store: StateStore, key: str, control: SequenceControl, model: str, previous: SessionState | None
    ) -> None:
        self.store, self.key, self.control, self.model, self.previous = store, key, control, model, previous
        self.request: bytes | None = None  # the digest of a numbered step's request (`replay`)
        # (step, batch size, states by name) when this step ran from new states, not its previous
        # record's (`states`); made into a history entry only when the model keeps history (`save`).
        self.start: tuple[int, int, dict[str, np.ndarray]] | None = None

    @classmethod
    async def begin(
        cls, store: StateStore, key: str, control: SequenceControl, model: str, fresh: bool = False
    ) -> SequenceStep:
        """Phase 2: a start reads nothing; a continue loads the session's record (`fresh`: the
        stored one, not this replica's copy)."""
        if control.start:
            if control.step not in (None, 1):
                raise InvalidInput(f"'{SEQUENCE_STEP}' of a sequence start must be 1, not {control.step}")
            return cls(store, key, control, model, None)
        replaying_end = control.step is not None
        previous = await load_record(store, key, model, control, replaying_end=replaying_end, fresh=fresh)
        return cls(store, key, control, model, previous)

    @property
    def pinned_version(self) -> int | None:
        """Phase 3: the version a continued session runs on; None for a start (the caller picks)."""
        return None if self.previous is None else self.previous.version

    def check_version(self, requested: str | None) -> None:
        if self.previous is not None and requested and requested != str(self.previous.version):
            raise InvalidInput(
                f"{self.control.describe()} runs on version {self.previous.version} of model '{self.model}', "
                f"not {requested}: a session stays on the version it started on"
            )

    def replay(self, inputs: Sequence[Tensor]) -> Arrays | None:
        """Phase 4: the stored answer when this numbered step was applied already, with these
        inputs; raises on a gap, or on the step's number reused with other inputs."""
        previous, step = self.previous, self.control.step
        if step is None:
            return None
        self.request = request_digest(inputs, self.control.end)
        if previous is None:
            return None
        if step == previous.step and previous.last_outputs is not None:
            if previous.from_copy:
                # A retry is rare and the copy may be behind a rewind or a state import made on
                # another replica: its stored answer is given only once the store confirms it.
                raise StaleCopy(f"{self.control.describe()}: step {step} is answered from the stored record")
            if previous.last_request in (None, self.request):  # None: stored before digests were kept
                return previous.last_outputs
            raise SessionConflict(
                f"step {step} of {self.control.describe()} was applied with other inputs: a retry must send the "
                f"same request; the next step is {previous.step + 1}"
            )
        if step != previous.step + 1:
            if previous.from_copy:
                raise StaleCopy(f"{self.control.describe()}: this replica's copy is at step {previous.step}")
            raise SessionConflict(
                f"{self.control.describe()} is at step {previous.step}; step {step} cannot be applied "
                f"(the next one is {previous.step + 1})"
            )
        return None

    @property
    def replayed_step(self) -> int:
        assert self.previous is not None
        return self.previous.step

    def states(
        self,
        signature: Signature,
        zero_states: Callable[[int], dict[str, np.ndarray]],
        seeded: dict[str, Tensor],
        batch_size: int,
    ) -> dict[str, np.ndarray]:
        """Phase 5: the state feeds of this step, keyed by graph input."""
        previous = self.previous
        if previous is None or not previous.states:  # a start, or the first step of a created session
            states = zero_states(batch_size)
            states.update(validate_states(signature, seeded, batch_size))
            step = 0 if previous is None else previous.step
            self.start = (step, batch_size, {spec.name: states[spec.input] for spec in signature.states})
            return states
        if batch_size != previous.batch_size:
            raise InvalidInput(
                f"{self.control.describe()} has batch size {previous.batch_size} (set by its first request), "
                f"this request has {batch_size}"
            )
        return {spec.input: previous.states[spec.name] for spec in signature.states}

    def _started_from(self) -> KeptState:
        """The states this step ran from, as the session's history keeps them."""
        if self.start is not None:
            return KeptState(*self.start)
        assert self.previous is not None  # a continuing step (`states`)
        return self.previous.kept

    async def save(
        self,
        signature: Signature,
        version: int,
        batch_size: int,
        results: Mapping[str, np.ndarray],
        limits: SessionLimits,
    ) -> int:
        """Phase 7: stores what this step made of the session, before the answer leaves; returns the
        session's step count after it."""
        control, previous = self.control, self.previous
        step = 1 if previous is None else previous.step + 1
        expected = None if previous is None else previous.revision
        try:
            if control.end and control.step is None:
                await self.store.delete(self.key, expected_revision=expected)
                return step
            await self._write(signature, version, batch_size, results, limits, step, expected)
        except SessionNotFound as e:  # gone since this replica's copy was made: say which session
            raise SessionNotFound(f"{control.describe()} of model '{self.model}' {e}") from None
        except SessionConflict as e:
            # Behind on the same run of the sequence: steps were served elsewhere since this
            # replica's copy. A restart or a state import in between is a real conflict.
            if previous is not None and previous.from_copy and e.generation == previous.generation:
                raise StaleCopy(str(e)) from None
            raise
        return step

    async def _write(
        self,
        signature: Signature,
        version: int,
        batch_size: int,
        results: Mapping[str, np.ndarray],
        limits: SessionLimits,
        step: int,
        expected: int | None,
    ) -> None:
        control = self.control
        # A numbered last step leaves an ended record holding its answer (no states), so a retry of
        # it is answered again rather than told the sequence has ended.
        outputs = {spec.name: results[spec.name] for spec in signature.outputs} if control.step is not None else None
        history: History = ()
        if limits.history > 0 and not control.end:
            history = extended(self.previous.history if self.previous else (), self._started_from(), limits.history)
        record = SessionState(
            model=self.model,
            version=version,
            batch_size=batch_size,
            states={} if control.end else {spec.name: results[spec.output] for spec in signature.states},
            step=step,
            last_outputs=outputs,
            last_request=self.request,
            ended=control.end,
            history=history,
        )
        # A continuing step is the same run of the sequence; a start begins a new one.
        record.generation = self.previous.generation if self.previous is not None else new_generation()
        await self.store.save(self.key, record, expected_revision=expected, limits=limits)
