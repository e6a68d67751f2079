"""SIGTERM with WebSockets open: an idle socket closes at once with 1001 (Going Away), a socket with a
step in flight gets that step's answer first, then 1001; the server exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from helpers.onnx_models import run_directly, write_lstm_model
from helpers.server import running_server
from helpers.websocket_client import binary_step, decode_answer, exchange, open_stream, step

LONG_STEPS = 400_000  # keeps ONNX Runtime busy for a good part of a second


async def test_sigterm_closes_websockets_with_1001_after_the_step_in_flight(tmp_path: Path) -> None:
    store = tmp_path / "models"
    write_lstm_model(store, "lstm", 1, stateful=True)
    x = np.random.default_rng(0).standard_normal((1, 2, 3)).astype(np.float32)
    env = {"SEQSERVE_SHUTDOWN_GRACE": "5", "SEQSERVE_MAX_TIMESTEPS_PER_REQUEST": str(LONG_STEPS)}
    with running_server(store, "--grpc-port", "0", env=env, log_dir=tmp_path) as server:
        url = f"ws://{server.http_url}/v2/models/lstm/stream"
        async with open_stream(url) as idle, open_stream(url) as busy:
            await exchange(idle, step(x[:, :1], 1, sequence_start=True))
            await exchange(busy, step(x[:, :1], 2, sequence_start=True))
            long = np.zeros((1, LONG_STEPS, 3), np.float32)
            await busy.send(binary_step(long, 2, "long"))
            await asyncio.sleep(0.3)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as idle_closed:
                await idle.recv()
            assert time.monotonic() - signalled < 2.0
            document, outputs = decode_answer(await busy.recv())  # answered before the close
            assert document["id"] == "long" and document["parameters"]["sequence_step"] == 2
            with pytest.raises(ConnectionClosed) as busy_closed:
                await busy.recv()
        for closed in (idle_closed.value, busy_closed.value):
            assert closed.rcvd is not None and closed.rcvd.code == 1001, closed
            assert "shutting down" in closed.rcvd.reason
        assert await asyncio.to_thread(server.process.wait, 10) == 0
    both = np.concatenate([x[:, :1], long], axis=1)
    expected = run_directly(store / "lstm" / "1", {"x": both})["last"]
    np.testing.assert_allclose(outputs["last"], expected, atol=1e-5)
    assert "Traceback" not in server.log()
