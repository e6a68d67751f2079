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
from seqserve.errors import LimitExceeded, SessionNotFound, StoreUnavailable
from seqserve.inference import InferRequest, Tensor
from seqserve.server import build_dataplane


def _step(x: np.ndarray, sequence_id: int = 3, **control: object) -> InferRequest:
    return InferRequest("lstm", inputs=[Tensor("x", "FP32", x)], parameters={"sequence_id": sequence_id, **control})


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
            with pytest.raises(StoreUnavailable, match="did not answer.*may be sent again") as refused:
                await plane.infer(_step(x[:, 1:2], sequence_step=2))
            assert time.monotonic() - began < 3  # the timeout, not a hang
            assert "seqserve_inference_requests_total" in plane.metrics.exposition().decode()  # a scrape survives
            port = str(redis.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"])
            assert port not in str(refused.value), "a client is not told where the store lives"
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


async def test_a_stored_record_this_server_cannot_read_is_a_clear_error_and_a_start_replaces_it(
    tmp_path: Path, redis_url: str
) -> None:
    """What another seqserve version (or anything else) left under a session's key."""
    write_lstm_model(tmp_path, "lstm", 1, stateful=True)
    x = np.random.default_rng(1).standard_normal((1, 2, 3)).astype(np.float32)
    writer = build_dataplane(Settings(store=tmp_path, device="cpu", sessions=redis_url))
    reader = build_dataplane(Settings(store=tmp_path, device="cpu", sessions=redis_url))
    try:
        await writer.infer(_step(x[:, :1], sequence_start=True))
        with redis.Redis.from_url(redis_url) as client:
            (key,) = client.keys("seqserve:*s:lstm/*")
            client.hset(key, "blob", b"\x10\x00\x00\x00{}")
        with pytest.raises(SessionNotFound, match="could not be read.*start the sequence again"):
            await reader.infer(_step(x[:, 1:2]))
        started = await reader.infer(_step(x[:, :1], sequence_start=True))
        expected = run_directly(tmp_path / "lstm" / "1", {"x": x[:, :1]})["sequence"]
        np.testing.assert_allclose(started.outputs[1].data, expected, atol=1e-6)
    finally:
        await writer.close()
        await reader.close()


async def test_a_redis_that_forgot_the_scripts_is_taught_them_again(tmp_path: Path, redis_url: str) -> None:
    """A primary promoted after a failover, or a restarted Redis, may not have the scripts loaded."""
    write_lstm_model(tmp_path, "lstm", 1, stateful=True)
    plane = build_dataplane(Settings(store=tmp_path, device="cpu", sessions=redis_url))
    x = np.random.default_rng(2).standard_normal((1, 3, 3)).astype(np.float32)
    try:
        outputs = [await plane.infer(_step(x[:, :1], sequence_start=True))]
        for t in (1, 2):
            redis.Redis.from_url(redis_url).script_flush()
            outputs.append(await plane.infer(_step(x[:, t : t + 1], sequence_end=t == 2)))
        expected = run_directly(tmp_path / "lstm" / "1", {"x": x})["sequence"]
        np.testing.assert_allclose(np.concatenate([o.outputs[1].data for o in outputs], axis=1), expected, atol=1e-6)
    finally:
        await plane.close()


async def test_a_redis_out_of_memory_refuses_writing_steps_with_429_and_changes_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    """maxmemory reached under `noeviction`: a save is refused whole (no session of its script
    written), a step that only ends a session still frees it, and the sessions go on afterwards."""
    write_lstm_model(tmp_path, "lstm", 1, stateful=True)
    plane = build_dataplane(Settings(store=tmp_path, device="cpu", sessions=redis_url))
    client = redis.Redis.from_url(redis_url)
    x = np.random.default_rng(3).standard_normal((1, 3, 3)).astype(np.float32)
    try:
        first = await plane.infer(_step(x[:, :1], sequence_start=True))
        await plane.infer(_step(x[:, :1], sequence_id=4, sequence_start=True))
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        try:
            with pytest.raises(LimitExceeded, match="out of memory.*maxmemory"):
                await plane.infer(_step(x[:, 1:2]))
            with pytest.raises(LimitExceeded, match="out of memory"):
                await plane.infer(_step(x[:, :1], sequence_id=5, sequence_start=True))
            await plane.infer(_step(x[:, 1:2], sequence_id=4, sequence_end=True))  # deletes only: allowed
            assert not client.keys("seqserve:*s:lstm/*4")
        finally:
            client.config_set("maxmemory", 0)
        # Unnumbered steps: had the refused step been stored, this one would answer the third timestep's output.
        second = await plane.infer(_step(x[:, 1:2]))
        third = await plane.infer(_step(x[:, 2:3], sequence_end=True))
        expected = run_directly(tmp_path / "lstm" / "1", {"x": x})["sequence"]
        got = np.concatenate([first.outputs[1].data, second.outputs[1].data, third.outputs[1].data], axis=1)
        np.testing.assert_allclose(got, expected, atol=1e-6)
    finally:
        await plane.close()
