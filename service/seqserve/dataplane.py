"""The data plane: the one code path behind every protocol.

REST and gRPC decode a request into `seqserve.inference` records, call this, and encode what it
returns. An inference request goes one of two ways: stateless (validate, run from zero state) or
a step of a sequence (the step protocol of `seqserve.sessions.steps`). Both run on the model
version's runner (`seqserve.runner`), which owns batching, threads and the version's metrics.
What the server says about its models is `catalog`; the session API is `session_api`.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from seqserve.auth import Authenticator
from seqserve.catalog import Catalog
from seqserve.errors import SeqserveError, SessionNotFound
from seqserve.inference import InferRequest, InferResponse, Tensor
from seqserve.metrics import Metrics
from seqserve.repository import Repository
from seqserve.runner import ModelRunner
from seqserve.session_api import SessionApi
from seqserve.sessions.control import SEQUENCE_STEP, SequenceControl, shown_id
from seqserve.sessions.keys import session_key
from seqserve.sessions.manager import SessionManager
from seqserve.sessions.steps import Arrays, SequenceStep, StaleCopy
from seqserve.store.model_store import ModelStore
from seqserve.store.signature import TensorSpec
from seqserve.validation import (
    RequestLimits,
    check_request_size,
    require_stateful,
    select_outputs,
    split_state_inputs,
    validate_inputs,
)

log = logging.getLogger(__name__)


class DataPlane:
    def __init__(
        self,
        store: ModelStore,
        sessions: SessionManager,
        metrics: Metrics,
        auth: Authenticator | None = None,
        limits: RequestLimits | None = None,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.metrics = metrics
        # Asked by each front end who a request comes from (`InferRequest.owner`); off by default.
        self.auth = auth or Authenticator()
        self.metrics.watch_sessions(self.sessions.store)
        self.catalog = Catalog(store)
        self.session_api = SessionApi(store, sessions, self.auth)
        # Triton's repository extension: index, load, unload (explicit model control or a rescan now).
        self.repository = Repository(store)
        # Bounds every front end applies to a request before decoding it, and this before using it.
        self.limits = limits or RequestLimits()

    async def close(self) -> None:
        self.store.close()
        await self.sessions.store.close()

    async def infer(self, request: InferRequest) -> InferResponse:
        started = time.perf_counter()
        try:
            self.limits.check_tensor_count(len(request.inputs))
            control = SequenceControl.from_parameters(request.parameters, self.limits.max_sequence_id_length)
            if control is None:
                response = await self._infer_stateless(request)
            else:
                response = await self._infer_sequence(request, control)
        except SeqserveError as e:
            log.info("request %s to model %s failed: %s", shown_id(request.id or "-"), request.model_name, e)
            # Only versions the store knows get labels: a client must not be able to mint metric series.
            try:
                known = self.store.find(request.model_name, request.model_version)
            except SeqserveError:
                raise e from None
            labels = (known.name, str(known.version))
            failed = self.metrics.of(*labels)
            failed.requests.inc()
            failed.statistics.failed(time.perf_counter() - started)
            self.metrics.failed(*labels, type(e).__name__)
            raise
        series = self.metrics.of(response.model_name, response.model_version)
        series.requests.inc()
        took = time.perf_counter() - started
        series.request_seconds.observe(took)
        series.statistics.succeeded(took)
        return response

    async def _infer_stateless(self, request: InferRequest) -> InferResponse:
        runner: ModelRunner = self.store.get_ready(request.model_name, request.model_version).runner
        signature = runner.signature
        check_request_size(runner.name, signature, request.inputs, runner.settings)
        feeds, batch_size = validate_inputs(signature, runner.name, request.inputs)
        wanted = select_outputs(signature, runner.name, request)
        feeds.update(runner.zero_states(batch_size))
        results = await runner.run(feeds)
        return _response(runner, request, wanted, results)

    async def _infer_sequence(self, request: InferRequest, control: SequenceControl) -> InferResponse:
        """One step of a sequence, in the phases of `seqserve.sessions.steps`."""
        key = session_key(request.model_name, control.id, request.owner)
        if control.start:
            self.auth.admit_new_session(request.owner)
        async with self.sessions.exclusive(key, control):
            try:
                return await self._apply_step(request, control, key, fresh=False)
            except StaleCopy:
                # This replica's copy of the session was behind: apply the step to the stored record.
                self.metrics.session_reloads.inc()
                return await self._apply_step(request, control, key, fresh=True)

    async def _apply_step(
        self, request: InferRequest, control: SequenceControl, key: str, fresh: bool
    ) -> InferResponse:
        """Phases 2 to 7 of the step protocol (phase 1, the session's turn, is the caller's)."""
        name = request.model_name
        try:
            step = await SequenceStep.begin(self.sessions.store, key, control, name, fresh=fresh)
        except SessionNotFound:
            # A model that cannot carry sequences deserves that answer, not "unknown sequence".
            require_stateful(self.store.get_ready(name, request.model_version).runner.signature, name)
            raise
        pinned = step.pinned_version
        if pinned is None:
            runner: ModelRunner = self.store.get_ready(name, request.model_version).runner
        else:
            runner = self.store.pinned(name, pinned).runner
            step.check_version(request.model_version)
        signature = runner.signature
        require_stateful(signature, name)
        wanted = select_outputs(signature, name, request)
        check_request_size(name, signature, request.inputs, runner.settings)
        stored = step.replay(request.inputs)
        if stored is not None:
            return _response(runner, request, wanted, stored, step=step.replayed_step)
        inputs, seeded = split_state_inputs(signature, request.inputs, allowed=control.start)
        feeds, batch_size = validate_inputs(signature, name, inputs)
        states = step.states(signature, runner.zero_states, seeded, batch_size)
        results = await runner.run(feeds | states, session=key, ends=control.end)
        limits = self.auth.limits(runner.limits, request.owner)
        number = await step.save(signature, runner.version, batch_size, results, limits)
        return _response(runner, request, wanted, results, step=number)


def _response(
    runner: ModelRunner,
    request: InferRequest,
    wanted: list[TensorSpec],
    results: Arrays,
    step: int | None = None,
) -> InferResponse:
    outputs = [Tensor(spec.name, spec.datatype, np.asarray(results[spec.name])) for spec in wanted]
    parameters = {} if step is None else {SEQUENCE_STEP: step}
    return InferResponse(
        model_name=runner.name, model_version=str(runner.version), id=request.id, outputs=outputs, parameters=parameters
    )
