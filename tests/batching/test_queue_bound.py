"""A model's queue is bounded (`max_queue_size`): past it a request is refused at once with 503 /
UNAVAILABLE and, over REST, Retry-After, instead of piling up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from helpers.onnx_models import write_lstm_model
from helpers.server import running_server
from seqserve.config import Settings
from seqserve.errors import QueueFull
from seqserve.inference import InferRequest, Tensor
from seqserve.server import build_dataplane


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("queue")
    write_lstm_model(root, "lstm", 1, stateful=True)
    return root


def _x() -> np.ndarray:
    return np.ones((1, 2, 3), np.float32)


@pytest.mark.parametrize("batching", [True, False])
async def test_requests_past_the_queue_bound_are_refused_and_the_others_run(store: Path, batching: bool) -> None:
    settings = Settings(
        store=store, device="cpu", batching=batching, max_queue_size=3, max_queue_delay=0.3, inline_max_elements=0
    )
    plane = build_dataplane(settings)
    try:
        requests = [InferRequest("lstm", inputs=[Tensor("x", "FP32", _x())]) for _ in range(5)]
        # All five are admitted (or not) before any run can finish: batched, the first batch waits for
        # company; unbatched, each goes to a thread (inline_max_elements=0) and completes later.
        results = await asyncio.gather(*map(plane.infer, requests), return_exceptions=True)
        refused = [r for r in results if isinstance(r, QueueFull)]
        served = [r for r in results if not isinstance(r, BaseException)]
        assert len(refused) == 2 and len(served) == 3, results
        assert all(r.retry_after and "max_queue_size" in str(r) for r in refused)
        # Once the queue has drained, the model takes requests again.
        assert (await plane.infer(requests[0])).outputs
    finally:
        await plane.close()


def test_rest_answers_503_with_retry_after_past_the_queue_bound(store: Path) -> None:
    env = {"SEQSERVE_MAX_QUEUE_SIZE": "2", "SEQSERVE_MAX_QUEUE_DELAY": "0.5"}
    with running_server(store, env=env) as server:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2, 3], "data": [1.0] * 6}]}

        async def send_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=f"http://{server.http_url}", timeout=10) as client:
                return await asyncio.gather(*(client.post("/v2/models/lstm/infer", json=body) for _ in range(5)))

        responses = asyncio.run(send_all())
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 200, 503, 503, 503], [(r.status_code, r.text) for r in responses]
        refused = [r for r in responses if r.status_code == 503]
        assert all(r.headers.get("retry-after") == "1" and "max_queue_size" in r.json()["error"] for r in refused)
