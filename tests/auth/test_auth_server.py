"""API keys on a real `seqserve serve`: no call without a key but the open ones, and no key can step,
read, overwrite or end another key's sequence or session, over REST, gRPC unary calls and streams and
the session API. Two keys' "42" are two sequences, each exact. Keys never reach the log."""

from __future__ import annotations

import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from helpers.onnx_models import run_directly, write_lstm_model
from helpers.server import RunningServer, running_server
from seqserve.grpc.generated import session_service_pb2 as spb
from seqserve.grpc.generated.session_service_pb2_grpc import SessionServiceStub

ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef00"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    write_lstm_model(store, "lstm", 1, stateful=True)
    return store


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    keys = tmp_path_factory.mktemp("secret") / "api-keys"
    keys.write_text(f"# one key per line\nalice:{ALICE}\nbob:{BOB}\n")
    env = {"SEQSERVE_API_KEYS_FILE": str(keys)}
    with running_server(store, "--log-level", "debug", env=env) as running:
        yield running


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _x(seed: int, steps: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, steps, 3)).astype(np.float32)


def _step_body(x: np.ndarray, sequence_id: int | str, **flags: object) -> dict[str, object]:
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
        "outputs": [{"name": "sequence"}],
        "parameters": {"sequence_id": sequence_id, **flags},
    }


def _sequence(data: dict[str, object], x: np.ndarray) -> np.ndarray:
    output = data["outputs"][0]  # type: ignore[index]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def _post(server: RunningServer, body: dict[str, object], key: str | None) -> httpx.Response:
    headers = _bearer(key) if key else {}
    return httpx.post(f"http://{server.http_url}/v2/models/lstm/infer", json=body, headers=headers, timeout=TIMEOUT)


# -- REST ------------------------------------------------------------------------------------------


def test_rest_refuses_a_call_without_a_valid_key_and_leaves_health_and_metrics_open(server: RunningServer) -> None:
    base = f"http://{server.http_url}"
    x = _x(0)
    for key in [None, "not-a-key-0123456789", ALICE[:-1]]:
        answer = _post(server, _step_body(x[:, :1], 1, sequence_start=True), key)
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "API key" in answer.json()["error"]
    for path in ["/v2/models/lstm", "/v2", "/v2/models/lstm/sessions/abc", "/no/such/route"]:
        assert httpx.get(base + path, timeout=TIMEOUT).status_code == 401, path
    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/lstm/ready", "/metrics"]:
        assert httpx.get(base + path, timeout=TIMEOUT).status_code == 200, path
    assert httpx.get(base + "/v2/models/lstm", headers=_bearer(BOB), timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("sequence_id", [42, "42"])
def test_two_keys_42_are_two_sequences_each_exact_over_rest(
    server: RunningServer, store: Path, sequence_id: int | str
) -> None:
    xa, xb = _x(1), _x(2)
    got: dict[str, list[np.ndarray]] = {ALICE: [], BOB: []}
    for t in range(3):  # interleaved: alice's step, then bob's
        for key, x in [(ALICE, xa), (BOB, xb)]:
            answer = _post(server, _step_body(x[:, t : t + 1], sequence_id, sequence_start=t == 0), key)
            assert answer.status_code == 200, answer.text
            got[key].append(_sequence(answer.json(), x))
    for key, x in [(ALICE, xa), (BOB, xb)]:
        expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"]
        np.testing.assert_allclose(np.concatenate(got[key], axis=1), expected, atol=1e-6)
    for key in [ALICE, BOB]:  # each ends its own
        assert _post(server, _step_body(xa[:, :1], sequence_id, sequence_end=True), key).status_code == 200


def test_another_key_cannot_step_or_end_a_sequence_and_the_owner_goes_on_exactly(
    server: RunningServer, store: Path
) -> None:
    x = _x(3)
    first = _post(server, _step_body(x[:, :1], 7001, sequence_start=True), ALICE)
    assert first.status_code == 200
    for flags in [{}, {"sequence_end": True}, {"sequence_step": 2}]:
        refused = _post(server, _step_body(x[:, 1:2], 7001, **flags), BOB)
        assert refused.status_code == 404, refused.text  # not 403: no oracle for probing ids
    second = _post(server, _step_body(x[:, 1:2], 7001), ALICE)
    assert second.status_code == 200, second.text
    expected = run_directly(store / "lstm" / "1", {"x": x[:, :2]})["sequence"]
    got = np.concatenate([_sequence(first.json(), x), _sequence(second.json(), x)], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_another_key_cannot_read_replace_end_or_step_a_session_over_rest(server: RunningServer) -> None:
    sessions = f"http://{server.http_url}/v2/models/lstm/sessions"
    created = httpx.post(sessions, headers=_bearer(ALICE), timeout=TIMEOUT)
    assert created.status_code == 200, created.text
    session_id = created.json()["id"]
    state = {"name": "lstm.h", "datatype": "FP32", "shape": [1, 4], "data": [0.0] * 4}
    state_c = {**state, "name": "lstm.c"}
    assert httpx.get(f"{sessions}/{session_id}", headers=_bearer(BOB), timeout=TIMEOUT).status_code == 404
    replaced = httpx.put(
        f"{sessions}/{session_id}", json={"inputs": [state, state_c]}, headers=_bearer(BOB), timeout=TIMEOUT
    )
    assert replaced.status_code == 404, replaced.text
    assert httpx.delete(f"{sessions}/{session_id}", headers=_bearer(BOB), timeout=TIMEOUT).status_code == 404
    assert _post(server, _step_body(_x(4)[:, :1], session_id), BOB).status_code == 404
    assert httpx.get(f"{sessions}/{session_id}", timeout=TIMEOUT).status_code == 401
    mine = httpx.get(f"{sessions}/{session_id}", headers=_bearer(ALICE), timeout=TIMEOUT)
    assert mine.status_code == 200 and mine.json()["parameters"]["sequence_step"] == 0
    assert _post(server, _step_body(_x(4)[:, :1], session_id), ALICE).status_code == 200
    assert httpx.delete(f"{sessions}/{session_id}", headers=_bearer(ALICE), timeout=TIMEOUT).status_code == 200


def test_a_flood_of_new_sessions_from_one_key_never_evicts_another_keys_idle_session(
    store: Path, tmp_path: Path
) -> None:
    """8 sessions on the server, 2 keys: a share of 4 each. Bob's two idle sequences outlive
    Alice's 30 new ones, which evict only her own oldest."""
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
    env = {"SEQSERVE_API_KEYS_FILE": str(keys), "SEQSERVE_MAX_SESSIONS": "8", "SEQSERVE_SESSION_EVICTION_GRACE": "0"}
    x = _x(10)
    with running_server(store, env=env, log_dir=tmp_path) as server:
        for k in range(1, 3):
            assert _post(server, _step_body(x[:, :1], k, sequence_start=True), BOB).status_code == 200
        for k in range(1, 31):
            assert _post(server, _step_body(x[:, :1], k, sequence_start=True), ALICE).status_code == 200
        for k in range(1, 3):
            answer = _post(server, _step_body(x[:, 1:2], k), BOB)
            assert answer.status_code == 200, answer.text
        evicted = _post(server, _step_body(x[:, 1:2], 1), ALICE)
        assert evicted.status_code == 404 and "evicted" in evicted.json()["error"]
        assert _post(server, _step_body(x[:, 1:2], 30), ALICE).status_code == 200


def test_starting_sequences_faster_than_a_keys_rate_is_429_with_retry_after(store: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
    env = {"SEQSERVE_API_KEYS_FILE": str(keys), "SEQSERVE_SESSION_CREATIONS_PER_KEY": "3"}
    x = _x(11)
    with running_server(store, env=env, log_dir=tmp_path) as server:
        answers = [_post(server, _step_body(x[:, :1], k, sequence_start=True), ALICE) for k in range(1, 11)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused and all(a.status_code in (200, 429) for a in answers)
        assert int(refused[0].headers["retry-after"]) >= 1
        assert "faster than 3 per second" in refused[0].json()["error"]
        sessions = f"http://{server.http_url}/v2/models/lstm/sessions"
        assert httpx.post(sessions, headers=_bearer(ALICE), timeout=TIMEOUT).status_code == 429
        assert _post(server, _step_body(x[:, :1], 1, sequence_start=True), BOB).status_code == 200  # bob's own rate
        assert _post(server, _step_body(x[:, 1:2], 1), ALICE).status_code == 200  # continuing is not starting


def test_only_the_keys_named_for_it_may_load_or_unload_models(server: RunningServer, store: Path) -> None:
    """Loading writes the store every key is served from: with keys on it is for named keys only
    (none are named on this server). Listing the repository is any key's."""
    base = f"http://{server.http_url}/v2/repository"
    for action in ["models/lstm/load", "models/lstm/unload"]:
        refused = httpx.post(f"{base}/{action}", headers=_bearer(ALICE), timeout=TIMEOUT)
        assert refused.status_code == 403, refused.text
        assert "SEQSERVE_MODEL_CONTROL_KEYS" in refused.json()["error"]
        assert httpx.post(f"{base}/{action}", timeout=TIMEOUT).status_code == 401
    index = httpx.post(f"{base}/index", headers=_bearer(BOB), timeout=TIMEOUT)
    assert index.status_code == 200 and index.json()[0]["name"] == "lstm"
    with triton.InferenceServerClient(server.grpc_url) as client:
        with pytest.raises(InferenceServerException) as denied:
            client.unload_model("lstm", headers=_auth(ALICE))
        assert denied.value.status() == "StatusCode.PERMISSION_DENIED"
        assert client.is_model_ready("lstm")


# -- gRPC ------------------------------------------------------------------------------------------


def _grpc_input(x: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def client(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.grpc_url) as client:
        yield client


def test_grpc_refuses_a_call_without_a_valid_key_and_leaves_health_open(
    client: triton.InferenceServerClient,
) -> None:
    x = _x(5)
    for headers in [None, _auth("not-a-key-0123456789")]:
        with pytest.raises(InferenceServerException) as refused:
            client.infer("lstm", [_grpc_input(x[:, :1])], sequence_id=9, sequence_start=True, headers=headers)
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_metadata("lstm", headers=headers)
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("lstm")
    assert client.get_model_metadata("lstm", headers=_auth(ALICE)).name == "lstm"


def test_two_keys_42_are_two_sequences_over_grpc_unary_and_another_key_cannot_step_or_end(
    client: triton.InferenceServerClient, store: Path
) -> None:
    xa, xb = _x(6), _x(7)
    got: dict[str, list[np.ndarray]] = {ALICE: [], BOB: []}
    for t in range(3):
        for key, x in [(ALICE, xa), (BOB, xb)]:
            answer = client.infer(
                "lstm", [_grpc_input(x[:, t : t + 1])], sequence_id=4242, sequence_start=t == 0, headers=_auth(key)
            )
            got[key].append(answer.as_numpy("sequence"))
    for key, x in [(ALICE, xa), (BOB, xb)]:
        expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"]
        np.testing.assert_allclose(np.concatenate(got[key], axis=1), expected, atol=1e-6)
    client.infer("lstm", [_grpc_input(xa[:, :1])], sequence_id=4343, sequence_start=True, headers=_auth(ALICE))
    for end in [False, True]:
        with pytest.raises(InferenceServerException) as refused:
            client.infer("lstm", [_grpc_input(xa[:, :1])], sequence_id=4343, sequence_end=end, headers=_auth(BOB))
        assert refused.value.status() == "StatusCode.NOT_FOUND"
    client.infer("lstm", [_grpc_input(xa[:, 1:2])], sequence_id=4343, sequence_end=True, headers=_auth(ALICE))


def test_a_stream_needs_a_key_and_steps_only_its_own_keys_sequences(
    client: triton.InferenceServerClient, store: Path
) -> None:
    x = _x(8)
    client.infer("lstm", [_grpc_input(x[:, :1])], sequence_id="s-77", sequence_start=True, headers=_auth(ALICE))
    answers: queue.Queue[tuple[object, InferenceServerException | None]] = queue.Queue()

    client.start_stream(callback=lambda result, error: answers.put((result, error)))  # no key: refused on opening
    _, error = answers.get(timeout=TIMEOUT)
    assert error is not None and error.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException, match="no longer in valid state"):
        client.async_stream_infer("lstm", [_grpc_input(x[:, 1:2])], sequence_id="s-77")
    client.stop_stream()

    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=_auth(BOB))
    client.async_stream_infer("lstm", [_grpc_input(x[:, 1:2])], sequence_id="s-77")
    client.async_stream_infer("lstm", [_grpc_input(x[:, 1:2])], sequence_id="s-77", sequence_end=True)
    for _ in range(2):
        _, error = answers.get(timeout=TIMEOUT)
        assert error is not None and "sequence 's-77'" in str(error), error  # in-band NOT_FOUND; the stream goes on
    client.stop_stream()

    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=_auth(ALICE))
    client.async_stream_infer("lstm", [_grpc_input(x[:, 1:2])], sequence_id="s-77")
    result, error = answers.get(timeout=TIMEOUT)
    client.stop_stream()
    assert error is None
    expected = run_directly(store / "lstm" / "1", {"x": x[:, :2]})["sequence"]
    np.testing.assert_allclose(result.as_numpy("sequence"), expected[:, 1:], atol=1e-6)  # type: ignore[attr-defined]


def test_another_key_cannot_read_replace_or_end_a_session_over_grpc(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        sessions = SessionServiceStub(channel)
        alice, bob = [(("authorization", f"Bearer {k}"),) for k in (ALICE, BOB)]
        with pytest.raises(grpc.RpcError) as refused:
            sessions.CreateSession(spb.CreateSessionRequest(model_name="lstm"), timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        session_id = sessions.CreateSession(
            spb.CreateSessionRequest(model_name="lstm"), metadata=alice, timeout=TIMEOUT
        ).session_id
        address = {"model_name": "lstm", "session_id": session_id}
        for call in [
            lambda: sessions.GetSession(spb.GetSessionRequest(**address), metadata=bob, timeout=TIMEOUT),
            lambda: sessions.SetSessionState(spb.SetSessionStateRequest(**address), metadata=bob, timeout=TIMEOUT),
            lambda: sessions.EndSession(spb.EndSessionRequest(**address), metadata=bob, timeout=TIMEOUT),
        ]:
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert sessions.GetSession(spb.GetSessionRequest(**address), metadata=alice, timeout=TIMEOUT).step == 0
        sessions.EndSession(spb.EndSessionRequest(**address), metadata=alice, timeout=TIMEOUT)


# -- the log and start-up --------------------------------------------------------------------------


def test_keys_never_reach_the_log(server: RunningServer) -> None:
    _post(server, _step_body(_x(9)[:, :1], 1), "wrong-key-0123456789abcdef")
    _post(server, _step_body(_x(9)[:, :1], 99999, sequence_step=5), BOB)  # a failing request: logged
    log = server.log()
    assert "infer request" in log or "failed" in log  # the log does speak of requests
    for secret in [ALICE, BOB, "wrong-key-0123456789abcdef"]:
        assert secret not in log


def test_a_broken_keys_file_stops_the_server_at_start_naming_the_line(store: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{ALICE}\nbob:short\n")
    finished = subprocess.run(
        [sys.executable, "-m", "seqserve.cli", "serve", "--store", str(store), "--http-port", "0", "--grpc-port", "0"],
        env={**_env(), "SEQSERVE_API_KEYS_FILE": str(keys)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode != 0
    assert "line 2: a key must have at least 16 characters" in finished.stderr
    assert ALICE not in finished.stderr + finished.stdout
    assert "Traceback" not in finished.stderr


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
