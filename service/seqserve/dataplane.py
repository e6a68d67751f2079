"""The data plane: the one code path behind every protocol.

REST and gRPC decode a request into `seqserve.inference` records, call this, and encode what it
returns. Validation against the model's signature, zero-state feeding, output selection and the
metrics happen here, once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from seqserve import __version__
from seqserve.batching import Batcher, batchable
from seqserve.batching.batcher import BatchStats
from seqserve.config import BatchCompute
from seqserve.datatypes import to_v2_datatype
from seqserve.errors import InvalidInput, SeqserveError, SessionConflict, SessionNotFound
from seqserve.inference import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    SessionInfo,
    Tensor,
    TensorMetadata,
)
from seqserve.metrics import Metrics
from seqserve.runtime.session import OrtModel
from seqserve.sessions.control import SEQUENCE_STEP, SequenceControl
from seqserve.sessions.manager import SessionManager, session_key
from seqserve.sessions.state import SessionState
from seqserve.sessions.stores import MemoryStateStore, SessionLimits, gone_message
from seqserve.store.model_config import ModelConfig
from seqserve.store.model_store import ModelStore, ModelVersion
from seqserve.store.signature import Signature, TensorSpec
from seqserve.validation import select_outputs, split_state_inputs, validate_inputs, validate_states

log = logging.getLogger(__name__)

SERVER_NAME = "seqserve"
EXTENSIONS = ["binary_tensor_data", "sequence"]
PLATFORM = "onnxruntime_onnx"


class DataPlane:
    def __init__(
        self,
        store: ModelStore,
        sessions: SessionManager | None = None,
        metrics: Metrics | None = None,
        compute_threads: int = 0,
        inline_max_elements: int = 0,
        batching: BatchingOptions | None = None,
    ) -> None:
        self.store = store
        self.inline_max_elements = inline_max_elements
        self.batching = batching or BatchingOptions(enabled=False)
        self._batchers: dict[tuple[str, int], _BatcherEntry] = {}
        self._batch_executors: list[ThreadPoolExecutor] = []
        self.sessions = sessions or SessionManager(MemoryStateStore())
        self.metrics = metrics or Metrics()
        self.metrics.watch_sessions(self.sessions.store)
        self._executor = ThreadPoolExecutor(
            max_workers=compute_threads or max(2, os.cpu_count() or 1), thread_name_prefix="seqserve-compute"
        )

    async def close(self) -> None:
        for entry in self._batchers.values():
            if entry.batcher is not None:
                await entry.batcher.close()
        for executor in self._batch_executors:
            executor.shutdown(wait=False, cancel_futures=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self.sessions.store.close()

    # -- health and metadata -------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready when every model in the store has at least one ready version."""
        return all(any(mv.ready for mv in self.store.versions(name)) for name in self.store.names())

    def server_metadata(self) -> dict[str, object]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self.store.find(name, version).ready

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        mv = self.store.get_ready(name, version)
        signature = mv.signature
        assert signature is not None
        versions = [str(mv.version)] if version else [str(v.version) for v in self.store.versions(name)]
        return ModelMetadata(
            name=name,
            versions=versions,
            platform=PLATFORM,
            inputs=[TensorMetadata(t.name, t.datatype, list(t.shape)) for t in signature.inputs],
            outputs=[TensorMetadata(t.name, t.datatype, list(t.shape)) for t in signature.outputs],
        )

    # -- inference -----------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        started = time.perf_counter()
        try:
            control = SequenceControl.from_parameters(request.parameters)
            if control is None:
                mv = self.store.get_ready(request.model_name, request.model_version)
                response = await self._infer_stateless(mv, request)
            else:
                response = await self._infer_sequence(request, control)
        except SeqserveError as e:
            log.info("request %s to model %s failed: %s", request.id or "-", request.model_name, e)
            # Only versions the store knows get labels: a client must not be able to mint metric series.
            try:
                known = self.store.find(request.model_name, request.model_version)
            except SeqserveError:
                raise e from None
            labels = (known.name, str(known.version))
            self.metrics.of(*labels).requests.inc()
            self.metrics.failures.labels(*labels, type(e).__name__).inc()
            raise
        labels = (response.model_name, response.model_version)
        series = self.metrics.of(*labels)
        series.requests.inc()
        series.request_seconds.observe(time.perf_counter() - started)
        return response

    async def _infer_stateless(self, mv: ModelVersion, request: InferRequest) -> InferResponse:
        signature, model = _parts(mv)
        feeds, batch_size = validate_inputs(signature, mv.name, request.inputs)
        wanted = select_outputs(signature, mv.name, request)
        feeds.update(model.zero_states(batch_size))
        results = await self._run(mv, feeds)
        return _response(mv, request, wanted, results)

    async def _infer_sequence(self, request: InferRequest, control: SequenceControl) -> InferResponse:
        name = request.model_name
        key = session_key(name, control.id)
        async with self.sessions.exclusive(key, control):
            if control.start:
                mv = self.store.get_ready(name, request.model_version)
                previous = None
            else:
                try:
                    previous = await self._load_session(key, name, control, replaying_end=control.step is not None)
                except SessionNotFound:
                    # A model that cannot carry sequences deserves that answer, not "unknown sequence".
                    _require_stateful(self.store.get_ready(name, request.model_version))
                    raise
                mv = self.store.pinned(name, previous.version)
                if request.model_version and request.model_version != str(previous.version):
                    raise InvalidInput(
                        f"{control.describe()} runs on version {previous.version} of model '{name}', "
                        f"not {request.model_version}: a session stays on the version it started on"
                    )
            signature, model = _require_stateful(mv)
            wanted = select_outputs(signature, name, request)
            if previous is not None and control.step is not None:
                replay = _check_step(control, previous)
                if replay is not None:
                    return _response(mv, request, wanted, replay, step=previous.step)
            if control.start and control.step not in (None, 1):
                raise InvalidInput(f"'{SEQUENCE_STEP}' of a sequence start must be 1, not {control.step}")

            inputs, initial = split_state_inputs(signature, request.inputs, allowed=control.start)
            feeds, batch_size = validate_inputs(signature, name, inputs)
            if previous is None or not previous.states:  # a start, or the first step of a created session
                states = model.zero_states(batch_size)
                states.update(validate_states(signature, initial, batch_size))
            else:
                if batch_size != previous.batch_size:
                    raise InvalidInput(
                        f"{control.describe()} has batch size {previous.batch_size} (set by its first request), "
                        f"this request has {batch_size}"
                    )
                states = {spec.input: previous.states[spec.name] for spec in signature.states}
            results = await self._run(mv, feeds | states, session=key, ends=control.end)

            step = 1 if previous is None else previous.step + 1
            # The new state is stored before the answer leaves, so an answered step is never lost.
            if control.end and control.step is None:
                await self.sessions.store.delete(key)
            else:
                # A numbered last step leaves an ended record holding its answer (no states), so
                # a retry of it is answered again rather than told the sequence has ended.
                outputs = None
                if control.step is not None:
                    outputs = {spec.name: results[spec.name] for spec in signature.outputs}
                state = SessionState(
                    model=name,
                    version=mv.version,
                    batch_size=batch_size,
                    states={} if control.end else {spec.name: results[spec.output] for spec in signature.states},
                    step=step,
                    last_outputs=outputs,
                    ended=control.end,
                )
                await self.sessions.store.save(
                    key,
                    state,
                    expected_revision=None if previous is None else previous.revision,
                    limits=self.session_limits(mv),
                )
            return _response(mv, request, wanted, results, step=step)

    def _batcher(self, mv: ModelVersion) -> Batcher | None:
        """The batcher of a model version, made on its first request; None where batching is off or impossible."""
        key = (mv.name, mv.version)
        entry = self._batchers.get(key)
        # The common case first: same loaded model, same config.yaml as last time.
        if entry is not None and entry.model is mv.model and entry.config is mv.config:
            return entry.batcher
        signature, model = _parts(mv)
        options = self.batching_options(mv)
        batcher = None
        if options.enabled and batchable(signature):
            if entry is not None and entry.model is model and entry.batcher is not None:
                batcher = entry.batcher  # config.yaml changed: the next batches follow it
                batcher.max_batch_size, batcher.max_queue_delay = options.max_batch_size, options.max_queue_delay
                batcher.sequence_batch_delay = options.sequence_batch_delay
            else:
                batcher = self._new_batcher(mv, model, options)
        self._batchers[key] = _BatcherEntry(model, mv.config, batcher)
        return batcher

    def _new_batcher(self, mv: ModelVersion, model: OrtModel, options: BatchingOptions) -> Batcher:
        labels = (mv.name, str(mv.version))
        series = self.metrics.of(*labels)
        compute_seconds, batch_size = series.compute_seconds, series.batch_size

        def observe(requests: int, samples: int, seconds: float) -> None:
            compute_seconds.observe(seconds)
            batch_size.observe(samples)

        executor = None
        if options.compute == "thread" or (options.compute == "auto" and model.on_cuda):
            # One compute thread per model version: ORT runs one batch while the event loop gathers the next.
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"seqserve-batch-{mv.name}")
            self._batch_executors.append(executor)
        return Batcher(
            model.run,
            executor,
            max_batch_size=options.max_batch_size,
            max_queue_delay=options.max_queue_delay,
            sequence_batch_delay=options.sequence_batch_delay,
            on_batch=observe,
        )

    def batch_stats(self, name: str, version: int) -> BatchStats | None:
        """What the batcher of a model version has done so far; None when it has none."""
        entry = self._batchers.get((name, version))
        return entry.batcher.stats if entry is not None and entry.batcher is not None else None

    def batching_options(self, mv: ModelVersion) -> BatchingOptions:
        """The server's batching settings, overridden by what the model's config.yaml sets."""
        config, server = mv.config, self.batching
        return BatchingOptions(
            enabled=server.enabled if config.batching is None else config.batching,
            max_batch_size=config.max_batch_size or server.max_batch_size,
            max_queue_delay=server.max_queue_delay if config.max_queue_delay is None else config.max_queue_delay,
            sequence_batch_delay=(
                server.sequence_batch_delay if config.sequence_batch_delay is None else config.sequence_batch_delay
            ),
            compute=server.compute,
        )

    @staticmethod
    def session_limits(mv: ModelVersion) -> SessionLimits:
        config = mv.config
        return SessionLimits(config.max_sessions, config.max_session_bytes, config.max_sequence_idle)

    # -- the session API: server-issued ids, state read and replaced, explicit end ------------------

    async def create_session(self, model: str, version: str | None = None, states: list[Tensor] = ()) -> SessionInfo:
        """A new session with an unguessable id (128 random bits), optionally seeded with states.

        Without states its batch size is set by its first request, which starts from zeros.
        """
        mv = self.store.get_ready(model, version)
        signature, _ = _require_stateful(mv)
        session_id = secrets.token_hex(16)
        state = _session_state(signature, mv, states, step=0)
        await self.sessions.store.save(
            session_key(model, session_id), state, expected_revision=None, limits=self.session_limits(mv)
        )
        return _session_info(session_id, state)

    async def get_session(self, model: str, session_id: str) -> SessionInfo:
        control = SequenceControl(session_id)
        state = await self._load_session(session_key(model, session_id), model, control)
        return _session_info(session_id, state)

    async def set_session_state(self, model: str, session_id: str, states: list[Tensor]) -> SessionInfo:
        """Replaces every state of the session (Keras `reset_states(states=...)`); its batch size may change."""
        key, control = session_key(model, session_id), SequenceControl(session_id)
        async with self.sessions.exclusive(key, control):
            previous = await self._load_session(key, model, control)
            mv = self.store.pinned(model, previous.version)
            signature, _ = _require_stateful(mv)
            if not states:
                raise InvalidInput(f"give the states to set: {', '.join(repr(s.name) for s in signature.states)}")
            state = _session_state(signature, mv, states, step=previous.step)
            await self.sessions.store.save(
                key, state, expected_revision=previous.revision, limits=self.session_limits(mv)
            )
            return _session_info(session_id, state)

    async def end_session(self, model: str, session_id: str) -> None:
        key, control = session_key(model, session_id), SequenceControl(session_id)
        async with self.sessions.exclusive(key, control):
            await self._load_session(key, model, control)  # an unknown session is an error, not a no-op
            await self.sessions.store.delete(key)

    async def _load_session(
        self, key: str, name: str, control: SequenceControl, replaying_end: bool = False
    ) -> SessionState:
        """The session's record; an ended one only to answer a retry of its last numbered step."""
        try:
            state = await self.sessions.store.load(key)
        except SessionNotFound as e:
            raise SessionNotFound(f"{control.describe()} of model '{name}' {e}") from None
        if state.ended and not (replaying_end and control.step == state.step):
            raise SessionNotFound(f"{control.describe()} of model '{name}' {gone_message('has ended')}")
        return state

    async def _run(
        self, mv: ModelVersion, feeds: dict[str, np.ndarray], session: str | None = None, ends: bool = False
    ) -> dict[str, np.ndarray]:
        """Runs the model: batched, or alone (small requests inline, larger ones on a compute thread).

        `session` and `ends` tell the batcher which sequence a step belongs to and whether it is its last.

        Handing a single streamed step to a thread costs several times what ORT spends on it (~375 us
        vs ~40 us measured here), while running it inline blocks the event loop only that long.
        """
        batcher = self._batcher(mv)
        if batcher is not None:
            return await batcher.run(feeds, session, ends)
        _, model = _parts(mv)
        labels = (mv.name, str(mv.version))
        if sum(a.size for a in feeds.values()) <= self.inline_max_elements:
            began = time.perf_counter()
            result = model.run(feeds)
            self.metrics.of(*labels).compute_seconds.observe(time.perf_counter() - began)
            return result
        submitted = time.perf_counter()

        def run() -> dict[str, np.ndarray]:
            began = time.perf_counter()
            self.metrics.of(*labels).queue_seconds.observe(began - submitted)
            result = model.run(feeds)
            self.metrics.of(*labels).compute_seconds.observe(time.perf_counter() - began)
            return result

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)


def _session_state(signature: Signature, mv: ModelVersion, given: list[Tensor], step: int) -> SessionState:
    """A session record holding exactly the given states, which must be all of the model's, one batch size."""
    if not given:
        return SessionState(model=mv.name, version=mv.version, batch_size=0, states={}, step=step)
    by_name = {}
    for tensor in given:
        if tensor.name in by_name:
            raise InvalidInput(f"state '{tensor.name}' is given more than once")
        by_name[tensor.name] = tensor
    known = {s.name for s in signature.states}
    unknown = [n for n in by_name if n not in known]
    if unknown:
        raise InvalidInput(f"unknown state {unknown[0]!r} for model '{mv.name}'; expected {sorted(known)}")
    missing = [n for n in sorted(known) if n not in by_name]
    if missing:
        raise InvalidInput(f"every state must be given; missing {', '.join(map(repr, missing))}")
    batch_size = given[0].data.shape[0] if given[0].data.ndim else 0
    feeds = validate_states(signature, by_name, batch_size)
    states = {spec.name: feeds[spec.input] for spec in signature.states}
    return SessionState(model=mv.name, version=mv.version, batch_size=batch_size, states=states, step=step)


def _session_info(session_id: str, state: SessionState) -> SessionInfo:
    return SessionInfo(
        session_id=session_id,
        model_name=state.model,
        model_version=str(state.version),
        step=state.step,
        batch_size=state.batch_size,
        states=[Tensor(name, to_v2_datatype(value.dtype), value) for name, value in state.states.items()],
    )


@dataclass(frozen=True)
class _BatcherEntry:
    model: OrtModel
    config: ModelConfig
    batcher: Batcher | None


@dataclass(frozen=True)
class BatchingOptions:
    enabled: bool = True
    max_batch_size: int = 64
    max_queue_delay: float = 0.0
    sequence_batch_delay: float = 0.002
    # Where batched runs happen: on the event loop, on a compute thread per model version, or auto:
    # a thread for a model on CUDA (the run waits on the device with the GIL released), the loop on CPU.
    compute: BatchCompute = "auto"


def _require_stateful(mv: ModelVersion) -> tuple[Signature, OrtModel]:
    signature, model = _parts(mv)
    if not signature.stateful:
        raise InvalidInput(
            f"model '{mv.name}' was exported without state, so it cannot carry a sequence; "
            "export it with `seqserve export --stateful`"
        )
    return signature, model


def _parts(mv: ModelVersion) -> tuple[Signature, OrtModel]:
    assert mv.signature is not None and isinstance(mv.model, OrtModel), "only ready versions are run"
    return mv.signature, mv.model


def _response(
    mv: ModelVersion,
    request: InferRequest,
    wanted: list[TensorSpec],
    results: dict[str, np.ndarray],
    step: int | None = None,
) -> InferResponse:
    outputs = [Tensor(spec.name, spec.datatype, results[spec.name]) for spec in wanted]
    parameters = {} if step is None else {SEQUENCE_STEP: step}
    return InferResponse(
        model_name=mv.name, model_version=str(mv.version), id=request.id, outputs=outputs, parameters=parameters
    )


def _check_step(control: SequenceControl, previous: SessionState) -> dict[str, np.ndarray] | None:
    """The stored answer when this numbered step was already applied; raises on a gap or an old step."""
    assert control.step is not None
    if control.step == previous.step and previous.last_outputs is not None:
        return previous.last_outputs
    if control.step != previous.step + 1:
        raise SessionConflict(
            f"{control.describe()} is at step {previous.step}; step {control.step} cannot be applied "
            f"(the next one is {previous.step + 1})"
        )
    return None
