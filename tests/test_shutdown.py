"""SIGTERM stops a real `seqserve serve` gracefully: not ready at once, nothing new accepted, what is in
flight finished, open streams ended at a request boundary with UNAVAILABLE, exit status 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from helpers.onnx_models import run_directly, write_lstm_model
from helpers.server import RunningServer, running_server
from seqserve.grpc.generated import grpc_service_pb2 as pb
from seqserve.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from seqserve.grpc.servicer import STOPPING

LONG_STEPS = 400_000  # a REST request that keeps ONNX Runtime busy for a good part of a second


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_lstm_model(root, "lstm", 1, stateful=True)
    return root


def _step(x: np.ndarray, sequence_id: int, start: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="lstm", id=f"s{sequence_id}")
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    request.parameters["sequence_id"].int64_param = sequence_id
    request.parameters["sequence_start"].bool_param = start
    return request


async def _not_ready(client: httpx.AsyncClient, url: str) -> bool:
    """Readiness is false (503) until the listener closes (connection refused)."""
    try:
        return (await client.get(url)).status_code == 503
    except httpx.ConnectError:
        return True


def _exit_status(server: RunningServer, timeout: float) -> int:
    return server.process.wait(timeout=timeout)


async def test_sigterm_ends_streams_at_a_boundary_finishes_requests_and_exits_0(store: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 3)).astype(np.float32)
    # The long request is over the default request limits on purpose: it must keep ORT busy.
    env = {"SEQSERVE_SHUTDOWN_GRACE": "5", "SEQSERVE_MAX_TIMESTEPS_PER_REQUEST": str(LONG_STEPS)}
    with running_server(store, "--log-level", "info", env=env, log_dir=tmp_path) as server:
        async with grpc.aio.insecure_channel(server.grpc_url) as channel:
            stub = GRPCInferenceServiceStub(channel)
            requests: asyncio.Queue[pb.ModelInferRequest | None] = asyncio.Queue()

            async def outgoing():  # type: ignore[no-untyped-def]
                while (request := await requests.get()) is not None:
                    yield request

            stream = stub.ModelStreamInfer(outgoing())
            answers = aiter(stream)
            await requests.put(_step(x[:, :1], 7, start=True))
            first = await anext(answers)
            assert not first.error_message
            # A long request in flight over REST when the signal comes.
            long = np.zeros((1, LONG_STEPS, 3), np.float32)
            body = {
                "inputs": [{"name": "x", "shape": list(long.shape), "datatype": "FP32", "data": long.ravel().tolist()}]
            }
            async with httpx.AsyncClient(timeout=30) as client:
                in_flight = asyncio.create_task(
                    client.post(f"http://{server.http_url}/v2/models/lstm/infer", json=body)
                )
                await asyncio.sleep(0.3)
                signalled = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                # The idle stream ends at once, saying nothing after its last answer was applied.
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await anext(answers)
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
                assert ended.value.details() == STOPPING
                assert time.monotonic() - signalled < 2.0
                # New calls are refused as UNAVAILABLE (retryable elsewhere), and so is readiness.
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.ModelInfer(_step(x[:, :1], 8, start=True), timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert await _not_ready(client, f"http://{server.http_url}/v2/health/ready")
                # The request that was in flight is answered.
                response = await in_flight
                assert response.status_code == 200
                expected = run_directly(store / "lstm" / "1", {"x": long})["last"]
                np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected.ravel(), atol=1e-5)
            await requests.put(None)
        assert await asyncio.to_thread(_exit_status, server, 10) == 0
    log = server.log()
    assert "SIGTERM: shutting down" in log and "stopped" in log
    assert "Traceback" not in log
