"""The REST app in-process, for what a real server cannot be made to do on purpose: an unexpected crash."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from seqserve.auth import Authenticator
from seqserve.config import Settings
from seqserve.rest.app import create_app


class CrashingDataPlane:
    """Stands in for DataPlane: healthy, but its inference hits a bug (not a SeqserveError)."""

    auth = Authenticator()  # off

    @property
    def catalog(self) -> CrashingDataPlane:  # the health answers live here too
        return self

    def live(self) -> bool:
        return True

    async def infer(self, request: Any) -> Any:
        raise RuntimeError("a bug, with internals the client must not see")


@pytest.fixture
def client() -> httpx.AsyncClient:
    app = create_app(CrashingDataPlane(), Settings())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://seqserve")


async def test_an_unexpected_error_is_a_500_with_a_v2_error_body(client: httpx.AsyncClient) -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    async with client:
        response = await client.post("/v2/models/any/infer", json=body)
        assert response.status_code == 500
        assert response.json() == {"error": "internal server error: RuntimeError"}
        assert (await client.get("/v2/health/live")).status_code == 200
