"""The session API and Triton sequences over REST, against a real server, driven by tritonclient and httpx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from helpers.onnx_models import run_directly, write_lstm_model
from helpers.server import RunningServer, running_server


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    write_lstm_model(root, "lstm", 1, stateful=True)
    return root


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[RunningServer]:
    with running_server(store, "--grpc-port", "0") as running:
        yield running


def _x(steps: int = 6) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((2, steps, 3)).astype(np.float32)


def _infer(client: httpclient.InferenceServerClient, x: np.ndarray, **sequence: object) -> np.ndarray:
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    return client.infer("lstm", [tensor], **sequence).as_numpy("sequence")


@pytest.mark.parametrize("chunk", [1, 3])
def test_a_sequence_streamed_over_rest_equals_the_whole_sequence(
    server: RunningServer, store: Path, chunk: int
) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    x = _x()
    parts = [
        _infer(client, x[:, t : t + chunk], sequence_id=11, sequence_start=t == 0, sequence_end=t + chunk >= 6)
        for t in range(0, 6, chunk)
    ]
    expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), expected, atol=1e-6)


def test_session_api_create_read_replace_end(server: RunningServer, store: Path) -> None:
    base = f"http://{server.http_url}/v2/models/lstm/sessions"
    client = httpclient.InferenceServerClient(server.http_url)
    x = _x()
    created = httpx.post(base).json()
    session = created["id"]
    assert created["parameters"] == {"session_id": session, "sequence_step": 0, "batch_size": 0}
    assert len(session) == 32

    _infer(client, x[:, :3], sequence_id=session)
    read = httpx.get(f"{base}/{session}").json()
    assert read["parameters"]["sequence_step"] == 1 and read["parameters"]["batch_size"] == 2
    states = {t["name"]: t for t in read["outputs"]}
    assert set(states) == {"lstm.h", "lstm.c"}

    # Import those states into a second session: both continue identically.
    other = httpx.post(base).json()["id"]
    body = {"inputs": [{k: t[k] for k in ("name", "datatype", "shape", "data")} for t in states.values()]}
    replaced = httpx.put(f"{base}/{other}", json=body)
    assert replaced.status_code == 200, replaced.text
    a = _infer(client, x[:, 3:], sequence_id=session)
    b = _infer(client, x[:, 3:], sequence_id=other)
    np.testing.assert_allclose(a, b, atol=1e-7)
    np.testing.assert_allclose(a, run_directly(store / "lstm" / "1", {"x": x})["sequence"][:, 3:], atol=1e-6)

    assert httpx.delete(f"{base}/{session}").status_code == 200
    gone = httpx.get(f"{base}/{session}")
    assert gone.status_code == 404 and "has ended" in gone.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/v2/models/lstm/sessions/0123abcd", None, 404, "is unknown"),
        ("POST", "/v2/models/nope/sessions", None, 404, "unknown model 'nope'"),
        ("PUT", "/v2/models/lstm/sessions/0123abcd", {"inputs": []}, 404, "is unknown"),
        ("POST", "/v2/models/lstm/sessions", {"inputs": [{"name": "lstm.h", "datatype": "FP32", "shape": [1, 4],
                                                          "data": [0, 0, 0, 0]}]}, 400, "missing 'lstm.c'"),
    ],
)  # fmt: skip
def test_session_api_errors(
    server: RunningServer, method: str, path: str, body: dict | None, status: int, message: str
) -> None:
    response = httpx.request(method, f"http://{server.http_url}{path}", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]
