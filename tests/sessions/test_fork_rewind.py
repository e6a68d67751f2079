"""Fork and rewind through a real server, with Keras as the oracle: a session forked at step k, each
branch continued with its own inputs, equals Keras `predict` of that branch's whole prefix (<= 1e-5),
over REST and gRPC, with the memory store and with Redis; so does a rewind then a continue. Forks
count against the limits (all or nothing), live in their owner's namespace, and bad requests are 400."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import keras
import numpy as np
import pytest
import redis
import tritonclient.grpc as triton

from helpers.keras_models import stateful_lstm
from helpers.onnx_models import write_lstm_model
from helpers.server import RunningServer, running_server
from seqserve.grpc.generated import session_service_pb2 as spb
from seqserve.grpc.generated.session_service_pb2_grpc import SessionServiceStub
from seqserve.sessions import codec

FEATURES, UNITS, BATCH, HISTORY = 3, 4, 2, 3
ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef00"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    model, store = stateful_lstm(tmp_path_factory.mktemp("keras"), FEATURES, UNITS, seed=5)
    (store / "lstm" / "config.yaml").write_text(f"session_history: {HISTORY}\n")
    write_lstm_model(store, "capped", 1, stateful=True)
    (store / "capped" / "config.yaml").write_text("max_sessions: 3\n")
    return model, store


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(
    request: pytest.FixtureRequest, built: tuple[keras.Model, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    keys = tmp_path_factory.mktemp("secret") / "api-keys"
    keys.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
    # A long eviction grace: a full model refuses rather than evicts, so "nothing created" is visible.
    env = {"SEQSERVE_API_KEYS_FILE": str(keys), "SEQSERVE_SESSION_EVICTION_GRACE": "3600"}
    sessions = ["--sessions", request.getfixturevalue("redis_url")] if request.param == "redis" else []
    with running_server(built[1], *sessions, env=env) as running:
        yield running


def _x(seed: int, steps: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, steps, FEATURES)).astype(np.float32)


def _keras(model: keras.Model, *chunks: np.ndarray) -> np.ndarray:
    """Keras' answer to the last chunk after all the others: the whole prefix, predicted at once."""
    whole = np.concatenate(chunks, axis=1)
    return model.predict(whole, batch_size=BATCH, verbose=0)[:, -chunks[-1].shape[1] :]


def _close(served: np.ndarray, expected: np.ndarray) -> None:
    assert float(np.max(np.abs(served - expected))) <= 1e-5


# -- REST --------------------------------------------------------------------------------------


def _url(server: RunningServer, path: str = "") -> str:
    return f"http://{server.http_url}/v2/models/lstm/sessions{path}"


def _auth(key: str = ALICE) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _rest_step(server: RunningServer, sequence_id: int | str, x: np.ndarray, **flags: object) -> np.ndarray:
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
        "parameters": {"sequence_id": sequence_id, **flags},
    }
    response = httpx.post(f"http://{server.http_url}/v2/models/lstm/infer", json=body, headers=_auth(), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def _rest_create(server: RunningServer) -> str:
    return str(httpx.post(_url(server), headers=_auth(), timeout=TIMEOUT).json()["id"])


def _rest_fork(server: RunningServer, session_id: str, **body: object) -> httpx.Response:
    return httpx.post(_url(server, f"/{session_id}/fork"), json=body or None, headers=_auth(), timeout=TIMEOUT)


def _rest_rewind(server: RunningServer, session_id: str, step: object) -> httpx.Response:
    return httpx.post(_url(server, f"/{session_id}/rewind"), json={"step": step}, headers=_auth(), timeout=TIMEOUT)


# -- gRPC --------------------------------------------------------------------------------------


class _Grpc:
    def __init__(self, server: RunningServer) -> None:
        self.channel = grpc.insecure_channel(server.grpc_url)
        self.sessions = SessionServiceStub(self.channel)
        self.triton = triton.InferenceServerClient(server.grpc_url)
        self.metadata = (("authorization", f"Bearer {ALICE}"),)

    def create(self) -> str:
        made = self.sessions.CreateSession(spb.CreateSessionRequest(model_name="lstm"), metadata=self.metadata)
        return str(made.session_id)

    def step(self, session_id: int | str, x: np.ndarray, **flags: object) -> np.ndarray:
        tensor = triton.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        headers = dict(self.metadata)
        parameters = {"sequence_step": flags.pop("sequence_step")} if "sequence_step" in flags else None
        result = self.triton.infer(
            "lstm", [tensor], sequence_id=session_id, headers=headers, parameters=parameters, **flags
        )
        return result.as_numpy("lstm")

    def fork(self, session_id: int | str, count: int = 1, step: int | None = None) -> list[str]:
        request = spb.ForkSessionRequest(model_name="lstm", count=count, **_named(session_id))
        if step is not None:
            request.step = step
        made = self.sessions.ForkSession(request, metadata=self.metadata)
        return [s.session_id for s in made.sessions]

    def rewind(self, session_id: int | str, step: int) -> spb.Session:
        request = spb.RewindSessionRequest(model_name="lstm", step=step, **_named(session_id))
        return self.sessions.RewindSession(request, metadata=self.metadata)

    def close(self) -> None:
        self.triton.close()
        self.channel.close()


def _named(sequence_id: int | str) -> dict[str, int | str]:
    return {"sequence_id": sequence_id} if isinstance(sequence_id, int) else {"session_id": sequence_id}


@pytest.fixture
def rpc(server: RunningServer) -> Iterator[_Grpc]:
    client = _Grpc(server)
    yield client
    client.close()


# -- parity ------------------------------------------------------------------------------------


def test_forked_branches_each_match_keras_over_rest(server: RunningServer, built: tuple[keras.Model, Path]) -> None:
    model = built[0]
    a1, a2, b, c, d = (_x(seed) for seed in range(5))
    origin = _rest_create(server)
    _rest_step(server, origin, a1)
    _rest_step(server, origin, a2)
    response = _rest_fork(server, origin, count=2)
    assert response.status_code == 200, response.text
    forks = response.json()["sessions"]
    assert [f["sequence_step"] for f in forks] == [2, 2] and [f["batch_size"] for f in forks] == [BATCH, BATCH]
    assert len({f["session_id"] for f in forks} | {origin}) == 3 and all(len(f["session_id"]) == 32 for f in forks)
    # Each branch goes on alone: a step on one never moves another, nor the origin.
    _close(_rest_step(server, forks[0]["session_id"], c), _keras(model, a1, a2, c))
    _close(_rest_step(server, origin, b), _keras(model, a1, a2, b))
    _close(_rest_step(server, forks[1]["session_id"], d), _keras(model, a1, a2, d))
    _close(_rest_step(server, forks[0]["session_id"], b), _keras(model, a1, a2, c, b))


def test_forked_branches_each_match_keras_over_grpc(
    server: RunningServer, rpc: _Grpc, built: tuple[keras.Model, Path]
) -> None:
    model = built[0]
    a1, a2, b, c = (_x(seed) for seed in range(10, 14))
    origin = rpc.create()
    rpc.step(origin, a1)
    rpc.step(origin, a2)
    (fork,) = rpc.fork(origin)
    _close(rpc.step(fork, c), _keras(model, a1, a2, c))
    _close(rpc.step(origin, b), _keras(model, a1, a2, b))
    # From a past step (kept by session_history): the state after step 1.
    (early,) = rpc.fork(origin, step=1)
    _close(rpc.step(early, c), _keras(model, a1, c))


def test_rewind_then_continue_matches_keras_over_rest(server: RunningServer, built: tuple[keras.Model, Path]) -> None:
    model = built[0]
    xs = [_x(seed) for seed in range(20, 25)]
    session = _rest_create(server)
    for number, x in enumerate(xs[:4], start=1):
        _rest_step(server, session, x, sequence_step=number)
    rewound = _rest_rewind(server, session, 2)
    assert rewound.status_code == 200, rewound.text
    assert rewound.json()["parameters"]["sequence_step"] == 2
    _close(_rest_step(server, session, xs[4], sequence_step=3), _keras(model, xs[0], xs[1], xs[4]))
    # A step 3 sent again is a retry of the new step 3, answered the same, applied once.
    _close(_rest_step(server, session, xs[4], sequence_step=3), _keras(model, xs[0], xs[1], xs[4]))
    _close(_rest_step(server, session, xs[3], sequence_step=4), _keras(model, xs[0], xs[1], xs[4], xs[3]))


def test_rewind_to_the_start_and_fork_from_a_past_step_over_grpc(
    server: RunningServer, rpc: _Grpc, built: tuple[keras.Model, Path]
) -> None:
    model = built[0]
    xs = [_x(seed) for seed in range(30, 34)]
    session = rpc.create()
    rpc.step(session, xs[0])
    rpc.step(session, xs[1])
    (fork,) = rpc.fork(session, step=1)
    assert rpc.rewind(session, 0).step == 0  # step 0, the state the session was created with, is kept
    _close(rpc.step(session, xs[2]), _keras(model, xs[2]))
    _close(rpc.step(fork, xs[3]), _keras(model, xs[0], xs[3]))


def test_fork_of_a_triton_sequence(server: RunningServer, built: tuple[keras.Model, Path]) -> None:
    model = built[0]
    a, b, c = (_x(seed) for seed in range(40, 43))
    for sequence_id, query in ((4242, "?id_type=uint64"), ("reader-7", "")):
        _rest_step(server, sequence_id, a, sequence_start=True)
        response = httpx.post(
            _url(server, f"/{sequence_id}/fork{query}"), json={"count": 1}, headers=_auth(), timeout=TIMEOUT
        )
        assert response.status_code == 200, response.text
        fork = response.json()["sessions"][0]["session_id"]
        _close(_rest_step(server, fork, b), _keras(model, a, b))
        _close(_rest_step(server, sequence_id, c), _keras(model, a, c))
    # uint64 4242 and the string "4242" are two sequences: the string one does not exist.
    assert _rest_fork(server, "4242").status_code == 404


def test_fork_and_rewind_of_a_uint64_sequence_over_grpc(
    server: RunningServer, rpc: _Grpc, built: tuple[keras.Model, Path]
) -> None:
    model = built[0]
    a, b, c, d = (_x(seed) for seed in range(50, 54))
    rpc.step(9001, a, sequence_start=True)
    rpc.step(9001, b)
    (fork,) = rpc.fork(9001)
    assert rpc.rewind(9001, 1).step == 1
    _close(rpc.step(9001, c), _keras(model, a, c))
    _close(rpc.step(fork, d), _keras(model, a, b, d))


@pytest.mark.parametrize("server", ["redis"], indirect=True)  # the memory store's records are in the server
def test_the_history_is_stored_in_redis(request: pytest.FixtureRequest, server: RunningServer) -> None:
    session = _rest_create(server)
    for _ in range(4):
        _rest_step(server, session, _x(3, steps=1))
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    (key,) = client.keys(f"*s:lstm/@alice/s:{session}")
    record = codec.decode(client.hget(key, "blob"))
    assert (record.step, [kept.step for kept in record.history]) == (4, [1, 2, 3])
    client.close()


# -- limits, owners, errors --------------------------------------------------------------------


def test_fork_refused_past_max_sessions_creates_none(server: RunningServer) -> None:
    base = f"http://{server.http_url}/v2/models/capped/sessions"
    origin = httpx.post(base, headers=_auth(), timeout=TIMEOUT).json()["id"]
    refused = httpx.post(f"{base}/{origin}/fork", json={"count": 3}, headers=_auth(), timeout=TIMEOUT)
    assert refused.status_code == 429, refused.text
    # None of the three was kept: the model's 3 places hold the origin and room for exactly two.
    made = httpx.post(f"{base}/{origin}/fork", json={"count": 2}, headers=_auth(), timeout=TIMEOUT)
    assert made.status_code == 200, made.text
    assert httpx.post(f"{base}/{origin}/fork", headers=_auth(), timeout=TIMEOUT).status_code == 429
    for session in [origin] + [s["session_id"] for s in made.json()["sessions"]]:
        httpx.delete(f"{base}/{session}", headers=_auth(), timeout=TIMEOUT)


def test_rewind_outside_the_kept_history_is_400_naming_the_range(server: RunningServer) -> None:
    session = _rest_create(server)
    for _ in range(5):
        _rest_step(server, session, _x(1, steps=1))
    for step in (1, 6, 99):
        response = _rest_rewind(server, session, step)
        assert response.status_code == 400
        assert f"steps {5 - HISTORY} to 5" in response.json()["error"]
    assert _rest_fork(server, session, step=0).status_code == 400
    # The failed requests changed nothing: the session is still at step 5.
    read = httpx.get(_url(server, f"/{session}"), headers=_auth(), timeout=TIMEOUT).json()
    assert read["parameters"]["sequence_step"] == 5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"count": 0}, "'count'"),
        ({"count": 1000}, "'count'"),
        ({"count": "2"}, "'count'"),
        ({"step": -1}, "'step'"),
        ({"steps": 1}, "unknown field"),
        ([1], "JSON object"),
    ],
)
def test_bad_fork_requests_are_400(server: RunningServer, body: object, message: str) -> None:
    session = _rest_create(server)
    response = httpx.post(_url(server, f"/{session}/fork"), json=body, headers=_auth(), timeout=TIMEOUT)
    assert response.status_code == 400 and message in response.json()["error"], response.text
    bad_rewind = httpx.post(_url(server, f"/{session}/rewind"), json={}, headers=_auth(), timeout=TIMEOUT)
    assert bad_rewind.status_code == 400 and "'step'" in bad_rewind.json()["error"]


def test_another_owners_session_and_an_unknown_one_are_404(server: RunningServer, rpc: _Grpc) -> None:
    session = _rest_create(server)
    _rest_step(server, session, _x(2))
    for key in (BOB,):
        fork = httpx.post(_url(server, f"/{session}/fork"), headers=_auth(key), timeout=TIMEOUT)
        rewind = httpx.post(_url(server, f"/{session}/rewind"), json={"step": 1}, headers=_auth(key), timeout=TIMEOUT)
        assert (fork.status_code, rewind.status_code) == (404, 404)
    assert _rest_fork(server, "0123abcd").status_code == 404
    assert _rest_rewind(server, "0123abcd", 0).status_code == 404
    with pytest.raises(grpc.RpcError) as caught:
        rpc.fork("0123abcd")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        rpc.rewind(session, 7)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- two replicas on one Redis -----------------------------------------------------------------


@pytest.fixture(scope="module")
def replicas(built: tuple[keras.Model, Path], redis_url: str) -> Iterator[tuple[RunningServer, RunningServer]]:
    with (
        running_server(built[1], "--sessions", redis_url) as one,
        running_server(built[1], "--sessions", redis_url) as two,
    ):
        yield one, two


def test_a_rewind_on_one_replica_is_seen_by_the_other(
    replicas: tuple[RunningServer, RunningServer], built: tuple[keras.Model, Path]
) -> None:
    """The other replica's copy of the session is behind the rewind: its next step, even one that
    looks like a retry of the step it served last, is checked against the stored record."""
    one, two = replicas
    model = built[0]
    a, b, c, d = (_x(seed) for seed in range(60, 64))
    session = _rest_create(two)
    _rest_step(two, session, a, sequence_step=1)
    _rest_step(two, session, b, sequence_step=2)
    assert _rest_rewind(one, session, 1).status_code == 200
    _close(_rest_step(two, session, b, sequence_step=2), _keras(model, a, b))  # applied again, not replayed
    _close(_rest_step(two, session, c, sequence_step=3), _keras(model, a, b, c))
    assert _rest_rewind(one, session, 2).status_code == 200
    _close(_rest_step(two, session, d, sequence_step=3), _keras(model, a, b, d))
