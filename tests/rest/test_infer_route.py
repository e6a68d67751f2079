"""The infer endpoint is a route of the app like any other: the app's middleware sees it, it answers
each kind of request and failure as the table below says, and it is in the OpenAPI document.

The app runs in process over one real data plane.
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
from seqserve.rest.app import create_app
from seqserve.server import build_dataplane

LIMIT = 4096  # max_request_bytes, small enough to cross in a test


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("infer-route") / "models"
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


JSON_X = {"name": "x", "shape": [1, 2, 3], "datatype": "FP32", "data": _x()}
# case -> (method, path, body and headers, status, what the body holds)
CASES: dict[str, tuple[str, str, tuple[bytes, dict[str, str]], int, str]] = {
    "json": ("POST", "/v2/models/lstm/infer", _json({"id": "a", "inputs": [JSON_X]}), 200, '"id":"a"'),
    "version": ("POST", "/v2/models/lstm/versions/1/infer", _json({"inputs": [JSON_X]}), 200, '"model_version":"1"'),
    "binary output": ("POST", "/v2/models/lstm/infer", _binary(), 200, '"binary_data_size":16'),
    "unknown model": ("POST", "/v2/models/nope/infer", _json({"inputs": []}), 404, "unknown model 'nope'"),
    "unknown version": ("POST", "/v2/models/lstm/versions/7/infer", _json({"inputs": []}), 404, "has no version 7"),
    "malformed json": ("POST", "/v2/models/lstm/infer", (b"{not json", {}), 400, "malformed JSON"),
    "wrong shape": (
        "POST",
        "/v2/models/lstm/infer",
        _json({"inputs": [{"name": "x", "shape": [1, 2, 4], "datatype": "FP32", "data": [0.0] * 8}]}),
        400,
        "has shape [1, 2, 4], expected [-1 (any), -1 (any), 3]",
    ),  # fmt: skip
    "bad header length": (
        "POST", "/v2/models/lstm/infer", (b"{}", {"inference-header-content-length": "99"}), 400, "is 99, but"
    ),  # fmt: skip
    "too large": ("POST", "/v2/models/lstm/infer", (b" " * (LIMIT + 1), {}), 413, "over the limit of 4096 bytes"),
    "not a number": (
        "POST", "/v2/models/lstm/infer", (b"{}", {"inference-header-content-length": "x"}), 400, "byte count"
    ),  # fmt: skip
    "get on infer": ("GET", "/v2/models/lstm/infer", (b"", {}), 405, "method GET is not allowed"),
    "trailing slash": ("POST", "/v2/models/lstm/infer/", _json({"inputs": []}), 307, ""),
    "metadata": ("GET", "/v2/models/lstm", (b"", {}), 200, '"platform":"onnxruntime_onnx"'),
    "unknown route": ("POST", "/v2/models/lstm/infer/more", (b"", {}), 404, "no endpoint POST"),
}


async def _send(
    app: Any, method: str, path: str, body: bytes, headers: dict[str, str], root: str = ""
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, root_path=root)
    async with httpx.AsyncClient(transport=transport, base_url="http://seqserve") as client:
        return await client.request(method, root + path, content=body, headers=headers, follow_redirects=False)


@pytest.mark.parametrize("case", CASES)
async def test_each_kind_of_request_gets_its_answer(case: str, dataplane: DataPlane, settings: Settings) -> None:
    method, path, (body, headers), status, holds = CASES[case]
    response = await _send(create_app(dataplane, settings), method, path, body, headers)
    assert response.status_code == status
    assert holds in response.text
    if status >= 400:
        assert set(response.json()) == {"error"}


async def test_middleware_added_to_the_app_sees_infer_requests(dataplane: DataPlane, settings: Settings) -> None:
    """Authentication, CORS or tracing added as middleware must not be bypassed by the infer endpoint."""
    app = create_app(dataplane, settings)
    seen: list[tuple[str, str]] = []

    class Recorder:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                seen.append((scope["method"], scope["path"]))
            await self.inner(scope, receive, send)

    app.add_middleware(Recorder)
    method, path, (body, headers), _, _ = CASES["json"]
    assert (await _send(app, method, path, body, headers)).status_code == 200
    assert (await _send(app, "POST", "/v2/models/lstm/versions/1/infer", body, headers)).status_code == 200
    assert (await _send(app, "GET", "/v2/health/live", b"", {})).status_code == 200
    assert seen == [
        ("POST", "/v2/models/lstm/infer"),
        ("POST", "/v2/models/lstm/versions/1/infer"),
        ("GET", "/v2/health/live"),
    ]


async def test_a_mounted_app_routes_infer_below_its_root_path(dataplane: DataPlane, settings: Settings) -> None:
    method, path, (body, headers), _, _ = CASES["json"]
    response = await _send(create_app(dataplane, settings), method, path, body, headers, root="/proxy")
    assert response.status_code == 200 and response.json()["id"] == "a"


async def test_the_openapi_document_lists_infer_with_its_request_schema(
    dataplane: DataPlane, settings: Settings
) -> None:
    document = (await _send(create_app(dataplane, settings), "GET", "/openapi.json", b"", {})).json()
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        body = document["paths"][path]["post"]["requestBody"]["content"]
        assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/InferRequest"}
    request = document["components"]["schemas"]["InferRequest"]
    assert request["required"] == ["inputs"]
    assert document["components"]["schemas"]["RequestInput"]["required"] == ["name", "shape", "datatype"]


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
