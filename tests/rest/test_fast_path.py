"""The infer fast path answers exactly as the FastAPI routes behind it do, and leaves the rest to them.

Both apps run in process over one real data plane; every case is sent to each, and status, body and
the headers a client reads must be the same.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from helpers.onnx_models import write_lstm_model
from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.rest.app import create_app, create_fastapi_app
from seqserve.rest.fast_path import InferFastPath
from seqserve.server import build_dataplane

LIMIT = 4096  # max_request_bytes, small enough to cross in a test


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fast-path") / "models"
    write_lstm_model(root, "lstm", 1)  # x [N, T, 3] -> `last` [N, 4], `sequence` [N, T, 4]
    return root


@pytest.fixture(scope="module")
def settings(store: Path) -> Settings:
    return Settings(store=store, device="cpu", store_poll_seconds=0, max_request_bytes=LIMIT)


@pytest.fixture
def dataplane(settings: Settings) -> Iterator[DataPlane]:
    yield build_dataplane(settings)


def _x(batch: int = 1, steps: int = 2) -> list[float]:
    return np.linspace(-1, 1, batch * steps * 3, dtype=np.float32).tolist()


def _json(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return json.dumps(body).encode(), {"content-type": "application/json"}


def _binary() -> tuple[bytes, dict[str, str]]:
    head = json.dumps({
        "id": "bin-1",
        "inputs": [{"name": "x", "shape": [1, 2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}],
        "outputs": [{"name": "last", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    raw = struct.pack("<6f", *_x())
    return head + raw, {"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))}


CASES: dict[str, tuple[str, str, tuple[bytes, dict[str, str]]]] = {
    "json": (
        "POST",
        "/v2/models/lstm/infer",
        _json({"id": "a", "inputs": [{"name": "x", "shape": [1, 2, 3], "datatype": "FP32", "data": _x()}]}),
    ),  # fmt: skip
    "version": (
        "POST",
        "/v2/models/lstm/versions/1/infer",
        _json({"inputs": [{"name": "x", "shape": [1, 2, 3], "datatype": "FP32", "data": _x()}]}),
    ),  # fmt: skip
    "binary output": ("POST", "/v2/models/lstm/infer", _binary()),
    "unknown model": ("POST", "/v2/models/nope/infer", _json({"inputs": []})),
    "unknown version": ("POST", "/v2/models/lstm/versions/7/infer", _json({"inputs": []})),
    "malformed json": ("POST", "/v2/models/lstm/infer", (b"{not json", {})),
    "wrong shape": (
        "POST",
        "/v2/models/lstm/infer",
        _json({"inputs": [{"name": "x", "shape": [1, 2, 4], "datatype": "FP32", "data": [0.0] * 8}]}),
    ),  # fmt: skip
    "bad header length": ("POST", "/v2/models/lstm/infer", (b"{}", {"inference-header-content-length": "99"})),
    "too large": ("POST", "/v2/models/lstm/infer", (b" " * (LIMIT + 1), {})),
    "not a number": ("POST", "/v2/models/lstm/infer", (b"{}", {"inference-header-content-length": "x"})),
    # Not infer requests: the fast path passes them through.
    "get on infer": ("GET", "/v2/models/lstm/infer", (b"", {})),
    "trailing slash": ("POST", "/v2/models/lstm/infer/", _json({"inputs": []})),
    "metadata": ("GET", "/v2/models/lstm", (b"", {})),
    "unknown route": ("POST", "/v2/models/lstm/infer/more", (b"", {})),
}
SAME_HEADERS = ("content-type", "content-length", "inference-header-content-length")


async def _send(
    app: Any, method: str, path: str, body: bytes, headers: dict[str, str], root: str = ""
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, root_path=root)
    async with httpx.AsyncClient(transport=transport, base_url="http://seqserve") as client:
        return await client.request(method, root + path, content=body, headers=headers, follow_redirects=False)


@pytest.mark.parametrize("case", CASES)
async def test_the_fast_path_answers_as_the_fastapi_routes_do(
    case: str, dataplane: DataPlane, settings: Settings
) -> None:
    method, path, (body, headers) = CASES[case]
    fast = await _send(create_app(dataplane, settings), method, path, body, headers)
    plain = await _send(create_fastapi_app(dataplane, settings), method, path, body, headers)
    assert (fast.status_code, fast.content) == (plain.status_code, plain.content)
    assert {h: fast.headers.get(h) for h in SAME_HEADERS} == {h: plain.headers.get(h) for h in SAME_HEADERS}


async def test_infer_requests_take_the_fast_path_and_succeed(dataplane: DataPlane, settings: Settings) -> None:
    fastapi_app = create_fastapi_app(dataplane, settings)
    seen: list[str] = []

    async def behind(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await fastapi_app(scope, receive, send)

    app = InferFastPath(behind, dataplane, LIMIT)
    method, path, (body, headers) = CASES["json"]
    response = await _send(app, method, path, body, headers)
    assert response.status_code == 200 and response.json()["id"] == "a"
    assert [o["name"] for o in response.json()["outputs"]] == ["last", "sequence"]
    assert seen == []  # FastAPI never saw it
    assert (await _send(app, "GET", "/v2/health/live", b"", {})).status_code == 200
    assert seen == ["/v2/health/live"]


async def test_a_mounted_app_routes_infer_below_its_root_path(dataplane: DataPlane, settings: Settings) -> None:
    method, path, (body, headers) = CASES["json"]
    fast = await _send(create_app(dataplane, settings), method, path, body, headers, root="/proxy")
    plain = await _send(create_fastapi_app(dataplane, settings), method, path, body, headers, root="/proxy")
    assert fast.status_code == plain.status_code == 200
    assert fast.content == plain.content


async def test_a_client_that_leaves_mid_body_gets_no_answer_and_runs_nothing(
    dataplane: DataPlane, settings: Settings
) -> None:
    messages = iter([{"type": "http.request", "body": b'{"inputs": [', "more_body": True}, {"type": "http.disconnect"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v2/models/lstm/infer", "headers": [], "root_path": ""}
    await create_app(dataplane, settings)(scope, receive, send)
    assert sent == []
    stats = dataplane.store.get_ready("lstm").runner.batch_stats
    assert stats is not None and stats.runs == 0  # the model never ran
