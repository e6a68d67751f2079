"""The session API: server-issued session ids, a session's states read and replaced, forked and
rewound, explicit end.

REST (`/v2/models/{name}/sessions`) and gRPC (`seqserve.SessionService`) both call this. A created
session is driven with ordinary infer requests whose `sequence_id` is its id, through the step
protocol (`seqserve.sessions.steps`). Fork and rewind also take a Triton sequence's id (a uint64
or a string, as its requests send `sequence_id`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from seqserve.auth import Authenticator
from seqserve.datatypes import to_v2_datatype
from seqserve.errors import InvalidInput
from seqserve.inference import SessionInfo, Tensor
from seqserve.runner import ModelRunner
from seqserve.sessions.control import SequenceControl
from seqserve.sessions.history import History, KeptState, kept_state
from seqserve.sessions.keys import session_key
from seqserve.sessions.manager import SessionManager
from seqserve.sessions.state import SessionState, new_generation
from seqserve.sessions.steps import load_record
from seqserve.store.model_store import ModelStore
from seqserve.validation import check_request_size, require_stateful, validate_states

# Forks one request may make: enough for a beam, few enough that one request cannot fill a server.
MAX_FORKS = 64


class SessionApi:
    def __init__(self, store: ModelStore, sessions: SessionManager, auth: Authenticator | None = None) -> None:
        self.store = store
        self.sessions = sessions
        self.auth = auth or Authenticator()

    async def create(
        self, model: str, version: str | None = None, states: Sequence[Tensor] = (), owner: str | None = None
    ) -> SessionInfo:
        """A new session with an unguessable id (128 random bits), optionally seeded with states.

        Without states its batch size is set by its first request, which starts from zeros. With
        API keys on, every method takes the caller (`owner`): its sessions are its own.
        """
        runner: ModelRunner = self.store.get_ready(model, version).runner
        require_stateful(runner.signature, model)
        self.auth.admit_new_session(owner)
        session_id = secrets.token_hex(16)
        state = _record(runner, states, step=0)
        limits = self.auth.limits(runner.limits, owner)
        await self.sessions.store.save(session_key(model, session_id, owner), state, None, limits=limits)
        return _info(session_id, state)

    async def get(self, model: str, session_id: str, owner: str | None = None) -> SessionInfo:
        key, control = session_key(model, session_id, owner), SequenceControl(session_id)
        state = await load_record(self.sessions.store, key, model, control, fresh=True)
        return _info(session_id, state)

    async def set_states(
        self, model: str, session_id: str, states: Sequence[Tensor], owner: str | None = None
    ) -> SessionInfo:
        """Replaces every state of the session (Keras `reset_states(states=...)`); its batch size may change."""
        key, control = session_key(model, session_id, owner), SequenceControl(session_id)
        async with self.sessions.exclusive(key, control):
            previous = await load_record(self.sessions.store, key, model, control, fresh=True)
            runner: ModelRunner = self.store.pinned(model, previous.version).runner
            require_stateful(runner.signature, model)
            if not states:
                names = ", ".join(repr(s.name) for s in runner.signature.states)
                raise InvalidInput(f"give the states to set: {names}")
            state = _record(runner, states, step=previous.step)
            await self.sessions.store.save(key, state, previous.revision, limits=self.auth.limits(runner.limits, owner))
            return _info(session_id, state)

    async def fork(
        self,
        model: str,
        session_id: int | str,
        count: int = 1,
        step: int | None = None,
        owner: str | None = None,
    ) -> list[SessionInfo]:
        """`count` new sessions (server-issued ids) holding copies of the session's states, now or
        after a past `step` it keeps (session_history), at that step count and on its version.

        They go on independently of it and of each other. They count against every limit as new
        sessions do, and are made all or none.
        """
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_FORKS:
            raise InvalidInput(f"'count' must be a whole number from 1 to {MAX_FORKS}, not {count!r}")
        key, control = session_key(model, session_id, owner), SequenceControl(session_id)
        # The session's turn: a fork sent after a step sees that step.
        async with self.sessions.exclusive(key, control):
            origin = await load_record(self.sessions.store, key, model, control, fresh=True)
            runner: ModelRunner = self.store.pinned(model, origin.version).runner
            require_stateful(runner.signature, model)
            kept, history = origin.kept, origin.history
            if step is not None:
                kept, history = kept_state(history, kept, step, _what(control, model), runner.limits.history)
            limits = self.auth.limits(runner.limits, owner)
            history = history[-limits.history :] if limits.history else ()
            self.auth.admit_new_session(owner, count)
            forks = [(secrets.token_hex(16), _restored(origin, kept, history)) for _ in range(count)]
            await self.sessions.store.create_all([(session_key(model, i, owner), f) for i, f in forks], limits)
        return [_info(i, f, with_states=False) for i, f in forks]

    async def rewind(self, model: str, session_id: int | str, step: int, owner: str | None = None) -> SessionInfo:
        """Back to the state after `step`, which the session keeps (session_history); its step count
        becomes `step`, so its next numbered request is step + 1. The steps after it are dropped."""
        key, control = session_key(model, session_id, owner), SequenceControl(session_id)
        async with self.sessions.exclusive(key, control):
            previous = await load_record(self.sessions.store, key, model, control, fresh=True)
            runner: ModelRunner = self.store.pinned(model, previous.version).runner
            require_stateful(runner.signature, model)
            what = _what(control, model)
            kept, history = kept_state(previous.history, previous.kept, step, what, runner.limits.history)
            # The same run of the sequence, moved back: a replica whose copy is behind reloads it
            # rather than refusing the next step as a conflict.
            state = _restored(previous, kept, history, generation=previous.generation)
            await self.sessions.store.save(key, state, previous.revision, limits=self.auth.limits(runner.limits, owner))
            return _info(str(session_id), state)

    async def end(self, model: str, session_id: str, owner: str | None = None) -> None:
        key, control = session_key(model, session_id, owner), SequenceControl(session_id)
        async with self.sessions.exclusive(key, control):
            # An unknown session is an error, not a no-op.
            await load_record(self.sessions.store, key, model, control, fresh=True)
            await self.sessions.store.delete(key)


def _record(runner: ModelRunner, given: Sequence[Tensor], step: int) -> SessionState:
    """A session record holding exactly the given states, which must be all of the model's, one batch size."""
    name, version, signature = runner.name, runner.version, runner.signature
    if not given:
        return SessionState(
            model=name, version=version, batch_size=0, states={}, step=step, generation=new_generation()
        )
    check_request_size(name, signature, given, runner.settings)
    by_name = {}
    for tensor in given:
        if tensor.name in by_name:
            raise InvalidInput(f"state '{tensor.name}' is given more than once")
        by_name[tensor.name] = tensor
    known = signature.state_names
    unknown = [n for n in by_name if n not in known]
    if unknown:
        raise InvalidInput(f"unknown state {unknown[0]!r} for model '{name}'; expected {sorted(known)}")
    missing = [n for n in sorted(known) if n not in by_name]
    if missing:
        raise InvalidInput(f"every state must be given; missing {', '.join(map(repr, missing))}")
    batch_size = given[0].data.shape[0] if given[0].data.ndim else 0
    feeds = validate_states(signature, by_name, batch_size)
    states = {spec.name: feeds[spec.input] for spec in signature.states}
    return SessionState(
        model=name, version=version, batch_size=batch_size, states=states, step=step, generation=new_generation()
    )


def _restored(origin: SessionState, kept: KeptState, history: History, generation: int | None = None) -> SessionState:
    """A record of the session's model and version holding the `kept` states at their step; by
    default a new run (a new generation: a fork is not its origin, see `SessionState.generation`)."""
    return SessionState(
        model=origin.model,
        version=origin.version,
        batch_size=kept.batch_size,
        states=kept.states,
        step=kept.step,
        generation=new_generation() if generation is None else generation,
        history=history,
    )


def _what(control: SequenceControl, model: str) -> str:
    return f"{control.describe()} of model '{model}'"


def _info(session_id: str, state: SessionState, with_states: bool = True) -> SessionInfo:
    states = state.states.items() if with_states else ()
    return SessionInfo(
        session_id=session_id,
        model_name=state.model,
        model_version=str(state.version),
        step=state.step,
        batch_size=state.batch_size,
        states=[Tensor(name, to_v2_datatype(value.dtype), value) for name, value in states],
    )
