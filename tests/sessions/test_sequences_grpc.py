"""Sequences end to end over gRPC: a real `tritonclient.grpc` drives a real `seqserve serve`.

Triton's sequence arguments (`sequence_id`, `sequence_start`, `sequence_end` of `infer` and
`async_stream_infer`) and our session service, on the hand-built stateful LSTM, on both state
stores: every streamed output must equal the whole sequence run at once by ONNX Runtime in-process.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from helpers.onnx_models import run_directly, write_lstm_model
from helpers.server import RunningServer, running_server
from seqserve.grpc.generated import grpc_service_pb2 as gpb
from seqserve.grpc.generated import session_service_pb2 as spb
from seqserve.grpc.generated.session_service_pb2_grpc import SessionServiceStub

# Short, so the idle-timeout test is quick; far longer than any pause between two steps of a test.
MAX_SEQUENCE_IDLE = 1.5
TIMEOUT = 10.0
ATOL = 1e-6
_ids = itertools.count(1000)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "models"
    write_lstm_model(root, "lstm", 1, stateful=True)
    write_lstm_model(root, "plain", 1, stateful=False)
    return root


@pytest.fixture(scope="module")
def lstm_dir(store: Path) -> Path:
    return store / "lstm" / "1"


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request: pytest.FixtureRequest, store: Path) -> Iterator[RunningServer]:
    """One server per state store: every behaviour below is pinned down on both."""
    sessions = "memory" if request.param == "memory" else request.getfixturevalue("redis_url")
    with running_server(store, "--sessions", sessions, "--max-sequence-idle", str(MAX_SEQUENCE_IDLE)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def sessions(server: RunningServer) -> Iterator[SessionServiceStub]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield SessionServiceStub(channel)


# -- two ways of sending a step: unary ModelInfer and the ModelStreamInfer stream -----------------


class Unary:
    def __init__(self, client: triton.InferenceServerClient) -> None:
        self.client = client

    def send(
        self, x: np.ndarray, sequence_id: int | str, start: bool = False, end: bool = False, step: int | None = None
    ) -> triton.InferResult:
        return self.client.infer(
            "lstm",
            [_input("x", x)],
            sequence_id=sequence_id,
            sequence_start=start,
            sequence_end=end,
            parameters=None if step is None else {"sequence_step": step},
            client_timeout=TIMEOUT,
        )


class Stream:
    """A tritonclient stream; `send` waits for the answer, `post` + `collect` pipeline requests."""

    def __init__(self, url: str) -> None:
        self.client = triton.InferenceServerClient(url)
        self.answers: queue.Queue[tuple[triton.InferResult | None, InferenceServerException | None]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.answers.put((result, error)))

    def post(
        self, x: np.ndarray, sequence_id: int | str, start: bool = False, end: bool = False, step: int | None = None
    ) -> None:
        self.client.async_stream_infer(
            "lstm",
            [_input("x", x)],
            sequence_id=sequence_id,
            sequence_start=start,
            sequence_end=end,
            parameters=None if step is None else {"sequence_step": step},
        )

    def collect(self) -> triton.InferResult:
        result, error = self.answers.get(timeout=TIMEOUT)
        if error is not None:
            raise error
        assert result is not None
        return result

    def send(
        self, x: np.ndarray, sequence_id: int | str, start: bool = False, end: bool = False, step: int | None = None
    ) -> triton.InferResult:
        self.post(x, sequence_id, start, end, step)
        return self.collect()

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


@pytest.fixture(params=["unary", "stream"])
def transport(
    request: pytest.FixtureRequest, client: triton.InferenceServerClient, server: RunningServer
) -> Iterator[Unary | Stream]:
    if request.param == "unary":
        yield Unary(client)
    else:
        stream = Stream(server.grpc_url)
        yield stream
        stream.close()


def _x(batch: int = 2, steps: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, steps, 3)).astype(np.float32)


def _input(name: str, data: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput(name, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return tensor


def _status(error: BaseException) -> str:
    assert isinstance(error, InferenceServerException)
    return error.status() or ""


def _chunks(steps: int, size: int) -> list[slice]:
    return [slice(t, min(t + size, steps)) for t in range(0, steps, size)]


def _sequence_id(kind: str) -> int | str:
    number = next(_ids)
    return number if kind == "uint64" else f"client-{number}"


# -- Triton's sequence contract -------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 4])
@pytest.mark.parametrize("kind", ["uint64", "string"])
def test_a_sequence_sent_in_chunks_equals_the_whole_sequence_at_once(
    transport: Unary | Stream, lstm_dir: Path, chunk: int, kind: str
) -> None:
    x = _x(steps=9)
    sequence_id = _sequence_id(kind)
    chunks = _chunks(9, chunk)
    results = [
        transport.send(x[:, s], sequence_id, start=i == 0, end=i == len(chunks) - 1) for i, s in enumerate(chunks)
    ]
    expected = run_directly(lstm_dir, {"x": x})
    streamed = np.concatenate([r.as_numpy("sequence") for r in results], axis=1)
    np.testing.assert_allclose(streamed, expected["sequence"], atol=ATOL)
    np.testing.assert_allclose(results[-1].as_numpy("last"), expected["last"], atol=ATOL)


def test_a_stream_answers_pipelined_steps_one_each_in_order(server: RunningServer, lstm_dir: Path) -> None:
    # Every step is sent before any answer is read: the stream must still apply them in order.
    x = _x(steps=8)
    stream = Stream(server.grpc_url)
    try:
        for t in range(8):
            stream.post(x[:, t : t + 1], 7, start=t == 0, end=t == 7)
        results = [stream.collect() for _ in range(8)]
    finally:
        stream.close()
    streamed = np.concatenate([r.as_numpy("sequence") for r in results], axis=1)
    np.testing.assert_allclose(streamed, run_directly(lstm_dir, {"x": x})["sequence"], atol=ATOL)


def test_start_resets_a_running_sequence(transport: Unary | Stream, lstm_dir: Path) -> None:
    x = _x()
    sequence_id = _sequence_id("uint64")
    transport.send(x[:, :3], sequence_id, start=True)
    transport.send(x[:, 3:], sequence_id)
    again = transport.send(x[:, :3], sequence_id, start=True)
    np.testing.assert_allclose(
        again.as_numpy("sequence"), run_directly(lstm_dir, {"x": x[:, :3]})["sequence"], atol=ATOL
    )
    transport.send(x[:, 3:4], sequence_id, end=True)


def test_interleaved_sequences_never_mix(
    client: triton.InferenceServerClient, server: RunningServer, lstm_dir: Path
) -> None:
    # Same-looking ids of both kinds (uint64 1 and string "1" are different sequences), the largest
    # id tritonclient can send (it sends ids as int64), steps alternating between unary and one stream.
    ids: list[int | str] = [1, "1", 2**63 - 1, "two", 2, "ü-ñ"]
    xs = {sid: _x(seed=i, steps=5) for i, sid in enumerate(ids)}
    got: dict[int | str, list[np.ndarray]] = {sid: [] for sid in ids}
    unary, stream = Unary(client), Stream(server.grpc_url)
    try:
        for t in range(5):
            for i, sid in enumerate(ids):
                via = unary if (i + t) % 2 == 0 else stream
                result = via.send(xs[sid][:, t : t + 1], sid, start=t == 0, end=t == 4)
                got[sid].append(result.as_numpy("sequence"))
    finally:
        stream.close()
    for sid in ids:
        expected = run_directly(lstm_dir, {"x": xs[sid]})["sequence"]
        np.testing.assert_allclose(np.concatenate(got[sid], axis=1), expected, atol=ATOL, err_msg=repr(sid))


def test_concurrent_sequences_never_mix(server: RunningServer, lstm_dir: Path) -> None:
    """Eight clients stream their own sequences at the same time, each in chunks of its own size."""
    failures: list[BaseException] = []
    outputs: dict[int, np.ndarray] = {}

    def run(worker: int) -> None:
        try:
            x = _x(batch=1 + worker % 3, steps=12, seed=100 + worker)
            sequence_id: int | str = 5000 + worker if worker % 2 else f"worker-{worker}"
            with triton.InferenceServerClient(server.grpc_url) as c:
                chunks = _chunks(12, 1 + worker % 4)
                results = [
                    Unary(c).send(x[:, s], sequence_id, start=i == 0, end=i == len(chunks) - 1)
                    for i, s in enumerate(chunks)
                ]
            outputs[worker] = np.concatenate([r.as_numpy("sequence") for r in results], axis=1)
            np.testing.assert_allclose(outputs[worker], run_directly(lstm_dir, {"x": x})["sequence"], atol=ATOL)
        except BaseException as e:  # reported by the main thread
            failures.append(e)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert len(outputs) == 8


def test_a_full_uint64_sequence_id_travels_as_uint64_param(server: RunningServer, lstm_dir: Path) -> None:
    # tritonclient sends ids as int64; Triton's C++ clients and the proto allow the whole uint64 range.
    x = _x(steps=2)
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        results = []
        for t in range(2):
            request = service_pb2.ModelInferRequest(model_name="lstm")
            request.inputs.add(name="x", datatype="FP32", shape=[2, 1, 3])
            request.raw_input_contents.append(x[:, t : t + 1].tobytes())
            request.parameters["sequence_id"].uint64_param = 2**64 - 1
            request.parameters["sequence_start"].bool_param = t == 0
            response = stub.ModelInfer(request, timeout=TIMEOUT)
            results.append(triton.InferResult(response).as_numpy("sequence"))
    np.testing.assert_allclose(np.concatenate(results, axis=1), run_directly(lstm_dir, {"x": x})["sequence"], atol=ATOL)


def test_a_retried_step_returns_the_stored_answer_without_advancing(transport: Unary | Stream, lstm_dir: Path) -> None:
    x = _x(steps=3)
    sequence_id = _sequence_id("string")
    transport.send(x[:, :1], sequence_id, start=True, step=1)
    second = transport.send(x[:, 1:2], sequence_id, step=2)
    retried = transport.send(x[:, 1:2], sequence_id, step=2)
    assert retried.get_response().parameters["sequence_step"].int64_param == 2
    np.testing.assert_array_equal(retried.as_numpy("sequence"), second.as_numpy("sequence"))
    third = transport.send(x[:, 2:3], sequence_id, step=3)
    assert third.get_response().parameters["sequence_step"].int64_param == 3
    np.testing.assert_allclose(
        third.as_numpy("sequence"), run_directly(lstm_dir, {"x": x})["sequence"][:, 2:3], atol=ATOL
    )
    # A step from the future (a gap) or from the past (older than the last one) is refused.
    for wrong in (5, 1):
        with pytest.raises(InferenceServerException, match=f"is at step 3; step {wrong} cannot be applied"):
            transport.send(x[:, 2:3], sequence_id, step=wrong)
    transport.send(x[:, 2:3], sequence_id, end=True, step=4)


def _session(sessions: SessionServiceStub, session_id: str) -> spb.Session:
    return sessions.GetSession(spb.GetSessionRequest(model_name="lstm", session_id=session_id), timeout=TIMEOUT)


def _states(session: spb.Session) -> dict[str, np.ndarray]:
    """The states of a Session, decoded by tritonclient itself: they are encoded as V2 outputs are."""
    response = service_pb2.ModelInferResponse(
        outputs=[
            service_pb2.ModelInferResponse.InferOutputTensor.FromString(t.SerializeToString()) for t in session.states
        ],
        raw_output_contents=session.raw_state_contents,
    )
    result = triton.InferResult(response)
    return {t.name: result.as_numpy(t.name) for t in session.states}


def test_failed_steps_name_the_problem_and_leave_the_state_unchanged(
    client: triton.InferenceServerClient, sessions: SessionServiceStub, server: RunningServer, lstm_dir: Path
) -> None:
    unary, x = Unary(client), _x()
    with pytest.raises(InferenceServerException) as caught:
        unary.send(x[:, :1], 424242)
    assert _status(caught.value) == "StatusCode.NOT_FOUND"
    assert "sequence 424242 of model 'lstm' is unknown" in caught.value.message()
    assert "sequence_start=true" in caught.value.message()

    # A string id can be read through the session service: the state must not move on a failure.
    sequence_id = _sequence_id("string")
    unary.send(x[:, :2], sequence_id, start=True)
    before = _session(sessions, str(sequence_id))
    with pytest.raises(InferenceServerException) as caught:
        unary.send(x[:1, 2:4], sequence_id)
    assert _status(caught.value) == "StatusCode.INVALID_ARGUMENT"
    assert "has batch size 2 (set by its first request), this request has 1" in caught.value.message()
    bad = x[:, 2:4].copy()
    bad[1, 0, 2] = np.inf
    with pytest.raises(InferenceServerException) as caught:
        unary.send(bad, sequence_id)
    assert _status(caught.value) == "StatusCode.INVALID_ARGUMENT"
    # On a stream the error comes back in-band, and the stream goes on.
    stream = Stream(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="this request has 3"):
            stream.send(_x(batch=3, steps=1), sequence_id)
        with pytest.raises(InferenceServerException, match="is unknown.*sequence_start=true"):
            stream.send(x[:, :1], "never-started")
        after = _session(sessions, str(sequence_id))
        assert (after.step, after.batch_size) == (before.step, before.batch_size) == (1, 2)
        for name, value in _states(before).items():
            np.testing.assert_array_equal(_states(after)[name], value)
        rest = stream.send(x[:, 2:], sequence_id, end=True)
    finally:
        stream.close()
    np.testing.assert_allclose(
        rest.as_numpy("sequence"), run_directly(lstm_dir, {"x": x})["sequence"][:, 2:], atol=ATOL
    )


def test_a_stream_closed_without_end_leaves_the_session_until_it_idles_out(
    client: triton.InferenceServerClient, server: RunningServer, lstm_dir: Path
) -> None:
    x = _x(steps=5)
    stream = Stream(server.grpc_url)
    try:
        for t in range(3):
            stream.send(x[:, t : t + 1], 31, start=t == 0)
    finally:
        stream.close()  # no sequence_end
    # The session outlives its stream: a new connection continues it where it was.
    resumed = Unary(client).send(x[:, 3:4], 31)
    np.testing.assert_allclose(
        resumed.as_numpy("sequence"), run_directly(lstm_dir, {"x": x})["sequence"][:, 3:4], atol=ATOL
    )
    time.sleep(MAX_SEQUENCE_IDLE + 0.7)
    with pytest.raises(InferenceServerException) as caught:
        Unary(client).send(x[:, 4:5], 31)
    assert _status(caught.value) == "StatusCode.NOT_FOUND"
    assert f"sequence 31 of model 'lstm' expired after {MAX_SEQUENCE_IDLE:g} s idle" in caught.value.message()
    assert "sequence_start=true" in caught.value.message()


# -- the session service ----------------------------------------------------------------------------


def _as_inputs(session: spb.Session) -> dict[str, object]:
    """What GetSession answers, as SetSessionState / CreateSession take it back."""
    tensor = gpb.ModelInferRequest.InferInputTensor
    return {
        "states": [tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in session.states],
        "raw_state_contents": list(session.raw_state_contents),
    }


def test_the_session_service_round_trips_state(
    client: triton.InferenceServerClient, sessions: SessionServiceStub, server: RunningServer, lstm_dir: Path
) -> None:
    x = _x(steps=7)
    oracle = run_directly(lstm_dir, {"x": x})
    a = sessions.CreateSession(spb.CreateSessionRequest(model_name="lstm"), timeout=TIMEOUT)
    assert len(a.session_id) == 32 and int(a.session_id, 16) >= 0
    assert (a.model_version, a.step, a.batch_size, len(a.states)) == ("1", 0, 0, 0)

    # Driven like any Triton sequence: the session id is a string sequence_id, no start flag.
    unary, stream = Unary(client), Stream(server.grpc_url)
    try:
        unary.send(x[:, :2], a.session_id)
        stream.send(x[:, 2:4], a.session_id)
    finally:
        stream.close()
    exported = _session(sessions, a.session_id)
    assert (exported.step, exported.batch_size) == (2, 2)
    states = _states(exported)
    assert set(states) == {"lstm.h", "lstm.c"}
    midway = run_directly(lstm_dir, {"x": x[:, :4]})
    np.testing.assert_allclose(states["lstm.h"], midway["state_out.lstm.h"], atol=ATOL)
    np.testing.assert_allclose(states["lstm.c"], midway["state_out.lstm.c"], atol=ATOL)

    b = sessions.CreateSession(spb.CreateSessionRequest(model_name="lstm"), timeout=TIMEOUT)
    imported = sessions.SetSessionState(
        spb.SetSessionStateRequest(model_name="lstm", session_id=b.session_id, **_as_inputs(exported)), timeout=TIMEOUT
    )
    assert (imported.session_id, imported.step, imported.batch_size) == (b.session_id, 0, 2)
    for name, value in _states(imported).items():
        np.testing.assert_array_equal(value, states[name])

    # Both continue identically, and as the uninterrupted sequence does.
    for s in (slice(4, 5), slice(5, 7)):
        from_a, from_b = unary.send(x[:, s], a.session_id), unary.send(x[:, s], b.session_id)
        np.testing.assert_array_equal(from_a.as_numpy("sequence"), from_b.as_numpy("sequence"))
        np.testing.assert_allclose(from_a.as_numpy("sequence"), oracle["sequence"][:, s], atol=ATOL)

    sessions.EndSession(spb.EndSessionRequest(model_name="lstm", session_id=a.session_id), timeout=TIMEOUT)
    with pytest.raises(InferenceServerException) as caught:
        unary.send(x[:, :1], a.session_id)
    assert _status(caught.value) == "StatusCode.NOT_FOUND"
    assert "has ended" in caught.value.message()
    for call, request in [
        (sessions.GetSession, spb.GetSessionRequest(model_name="lstm", session_id=a.session_id)),
        (sessions.EndSession, spb.EndSessionRequest(model_name="lstm", session_id=a.session_id)),
    ]:
        with pytest.raises(grpc.RpcError) as rpc_error:
            call(request, timeout=TIMEOUT)
        assert rpc_error.value.code() == grpc.StatusCode.NOT_FOUND
        assert "has ended" in rpc_error.value.details()
    assert _session(sessions, b.session_id).step == 2
    sessions.EndSession(spb.EndSessionRequest(model_name="lstm", session_id=b.session_id), timeout=TIMEOUT)


def test_a_session_created_with_typed_contents_continues_from_them(
    client: triton.InferenceServerClient, sessions: SessionServiceStub, lstm_dir: Path
) -> None:
    x = _x(steps=5)
    midway = run_directly(lstm_dir, {"x": x[:, :3]})
    states = [
        gpb.ModelInferRequest.InferInputTensor(
            name=name, datatype="FP32", shape=[2, 4], contents=gpb.InferTensorContents(fp32_contents=value.ravel())
        )
        for name, value in (("lstm.h", midway["state_out.lstm.h"]), ("lstm.c", midway["state_out.lstm.c"]))
    ]
    created = sessions.CreateSession(spb.CreateSessionRequest(model_name="lstm", states=states), timeout=TIMEOUT)
    assert (created.step, created.batch_size) == (0, 2)
    rest = Unary(client).send(x[:, 3:], created.session_id, end=True)
    np.testing.assert_allclose(
        rest.as_numpy("sequence"), run_directly(lstm_dir, {"x": x})["sequence"][:, 3:], atol=ATOL
    )


def test_session_service_errors_have_status_codes_and_change_nothing(sessions: SessionServiceStub) -> None:
    def refused(call: Callable[..., object], request: object, code: grpc.StatusCode, text: str) -> None:
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=TIMEOUT)
        assert (caught.value.code(), text in caught.value.details()) == (code, True), caught.value.details()

    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    refused(sessions.CreateSession, spb.CreateSessionRequest(model_name="nope"), not_found, "nope")
    refused(sessions.CreateSession, spb.CreateSessionRequest(), invalid, "'model_name' is required")
    refused(sessions.CreateSession, spb.CreateSessionRequest(model_name="plain"), invalid, "exported without state")
    refused(sessions.GetSession, spb.GetSessionRequest(model_name="lstm", session_id="0" * 32), not_found, "is unknown")
    refused(sessions.GetSession, spb.GetSessionRequest(model_name="lstm"), invalid, "'session_id' is required")

    session = sessions.CreateSession(spb.CreateSessionRequest(model_name="lstm"), timeout=TIMEOUT)
    h = gpb.ModelInferRequest.InferInputTensor(name="lstm.h", datatype="FP32", shape=[2, 4])
    c = gpb.ModelInferRequest.InferInputTensor(name="lstm.c", datatype="FP32", shape=[2, 4])
    zeros = np.zeros((2, 4), np.float32).tobytes()
    for states, raw, text in [
        ([h], [zeros], "missing 'lstm.c'"),
        ([h, c], [zeros], "2 state(s) but 1 raw_state_contents entries"),
        ([h, c], [zeros, zeros[:8]], "expected 32"),
        ([], [], "give the states to set"),
    ]:
        request = spb.SetSessionStateRequest(
            model_name="lstm", session_id=session.session_id, states=states, raw_state_contents=raw
        )
        refused(sessions.SetSessionState, request, invalid, text)
    # A session belongs to its model: under another model the same id is unknown.
    refused(
        sessions.GetSession,
        spb.GetSessionRequest(model_name="plain", session_id=session.session_id),
        not_found,
        "of model 'plain' is unknown",
    )
    unchanged = _session(sessions, session.session_id)
    assert (unchanged.step, unchanged.batch_size, len(unchanged.states)) == (0, 0, 0)
    sessions.EndSession(spb.EndSessionRequest(model_name="lstm", session_id=session.session_id), timeout=TIMEOUT)


def test_reflection_describes_the_session_service(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "seqserve.SessionService" in database.get_services()
        # What grpcurl does: fetch the file defining the service (and the file it imports).
        service = descriptor_pool.DescriptorPool(database).FindServiceByName("seqserve.SessionService")
        methods = {"CreateSession", "GetSession", "SetSessionState", "EndSession", "ForkSession", "RewindSession"}
        assert {m.name for m in service.methods} == methods
        states = service.methods_by_name["SetSessionState"].input_type.fields_by_name["states"]
        assert states.message_type.full_name == "inference.ModelInferRequest.InferInputTensor"
