"""A session store that does not answer makes a step fail as 503 / UNAVAILABLE, retryable and
changing nothing, within the configured timeout; the server and its metrics go on, and so does the
session once Redis answers again."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from helpers.onnx_models import run_directly, write_lstm_model
from seqserve.config import Settings
from seqserve.errors import StoreUnavailable
from seqserve.inference import InferRequest, Tensor
from seqserve.server import build_dataplane


def _step(x: np.ndarray, **control: object) -> InferRequest:
    return InferRequest("lstm", inputs=[Tensor("x", "FP32", x)], parameters={"sequence_id": 3, **control})


async def test_a_paused_redis_fails_the_step_in_time_and_the_session_goes_on(tmp_path: Path, redis_url: str) -> None:
    write_lstm_model(tmp_path, "lstm", 1, stateful=True)
    plane = build_dataplane(Settings(store=tmp_path, device="cpu", sessions=redis_url, session_store_timeout=0.5))
    pid = int(redis.Redis.from_url(redis_url).info()["process_id"])
    x = np.random.default_rng(0).standard_normal((1, 3, 3)).astype(np.float32)
    try:
        await plane.infer(_step(x[:, :1], sequence_start=True, sequence_step=1))
        os.kill(pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(StoreUnavailable, match="did not answer.*may be sent again"):
                await plane.infer(_step(x[:, 1:2], sequence_step=2))
            assert time.monotonic() - began < 3  # the timeout, not a hang
            assert "seqserve_inference_requests_total" in plane.metrics.exposition().decode()  # a scrape survives
        finally:
            os.kill(pid, signal.SIGCONT)
        # The failed step changed nothing: sent again, it is applied once and the outputs are exact.
        second = await plane.infer(_step(x[:, 1:2], sequence_step=2))
        third = await plane.infer(_step(x[:, 2:3], sequence_step=3))
        expected = run_directly(tmp_path / "lstm" / "1", {"x": x})["sequence"]
        got = np.concatenate([second.outputs[1].data, third.outputs[1].data], axis=1)
        np.testing.assert_allclose(got, expected[:, 1:], atol=1e-6)
    finally:
        await plane.close()
