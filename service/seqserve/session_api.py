"""The session API: server-issued session ids, a session's states read and replaced, explicit end.

REST (`/v2/models/{name}/sessions`) and gRPC (`seqserve.SessionService`) both call this. A created
session is driven with ordinary infer requests whose `sequence_id` is its id, through the step
protocol (`seqserve.sessions.steps`).
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
from seqserve.sessions.keys import session_key
from seqserve.sessions.manager import SessionManager
from seqserve.sessions.state import SessionState, new_generation
from seqserve.sessions.steps import load_record
from seqserve.store.model_store import ModelStore
from seqserve.validation import check_request_size, require_stateful, validate_states


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


def _info(session_id: str, state: SessionState) -> SessionInfo:
    return SessionInfo(
        session_id=session_id,
        model_name=state.model,
        model_version=str(state.version),
        step=state.step,
        batch_size=state.batch_size,
        states=[Tensor(name, to_v2_datatype(value.dtype), value) for name, value in state.states.items()],
    )
