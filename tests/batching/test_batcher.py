"""Batching changes nothing but speed: batched results equal unbatched ones, and sessions never mix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from helpers.onnx_models import run_directly, write_embedding_model, write_lstm_model
from seqserve.batching import Batcher
from seqserve.batching.batcher import BatchStats
from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.errors import ModelNotReady
from seqserve.inference import InferRequest, Tensor
from seqserve.server import build_dataplane


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    write_lstm_model(root, "lstm", 1, stateful=True)
    write_embedding_model(root, "embed", 1)
    return root


@pytest.fixture(params=["loop", "thread"])
async def plane(store: Path, request: pytest.FixtureRequest) -> AsyncIterator[DataPlane]:
    """Every data-plane test runs with batches on the event loop and on a compute thread."""
    p = build_dataplane(
        Settings(store=store, device="cpu", max_batch_size=16, max_queue_delay=0.005, batch_compute=request.param)
    )
    yield p
    await p.close()


def _x(rng: np.random.Generator, batch: int, steps: int) -> np.ndarray:
    return rng.standard_normal((batch, steps, 3)).astype(np.float32)


def _stats_of(plane: DataPlane, name: str) -> BatchStats:
    stats = plane.store.get_ready(name).runner.batch_stats
    assert stats is not None
    return stats


async def test_concurrent_stateless_requests_are_batched_and_equal_unbatched_runs(
    plane: DataPlane, store: Path
) -> None:
    rng = np.random.default_rng(0)
    # Batch sizes 1..3 and two sequence lengths: only equal lengths may share a run.
    xs = [_x(rng, 1 + i % 3, 2 if i % 4 else 5) for i in range(24)]
    responses = await asyncio.gather(*(plane.infer(InferRequest("lstm", inputs=[Tensor("x", "FP32", x)])) for x in xs))
    for x, response in zip(xs, responses, strict=True):
        expected = run_directly(store / "lstm" / "1", {"x": x})
        for tensor in response.outputs:
            np.testing.assert_allclose(tensor.data, expected[tensor.name], atol=1e-6, rtol=0)
    stats = _stats_of(plane, "lstm")
    assert stats.requests == 24 and stats.runs < 24, stats
    assert max(stats.sizes) <= 16


async def test_steps_of_many_sessions_batched_together_never_mix(plane: DataPlane, store: Path) -> None:
    rng = np.random.default_rng(1)
    sequences = {sid: _x(rng, 2, 5) for sid in range(1, 9)}
    got: dict[int, list[np.ndarray]] = {sid: [] for sid in sequences}
    for t in range(5):
        requests = [
            InferRequest(
                "lstm",
                inputs=[Tensor("x", "FP32", x[:, t : t + 1])],
                parameters={"sequence_id": sid, "sequence_start": t == 0},
            )
            for sid, x in sequences.items()
        ]
        for sid, response in zip(sequences, await asyncio.gather(*map(plane.infer, requests)), strict=True):
            got[sid].append(response.outputs[1].data)
    for sid, x in sequences.items():
        expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"]
        np.testing.assert_allclose(np.concatenate(got[sid], axis=1), expected, atol=1e-6, rtol=0)
    assert _stats_of(plane, "lstm").runs < 5 * 8


async def test_integer_inputs_batch_too(plane: DataPlane, store: Path) -> None:
    tokens = [np.array([[i, i + 1, 0]], dtype=np.int64) for i in range(6)]
    responses = await asyncio.gather(
        *(plane.infer(InferRequest("embed", inputs=[Tensor("tokens", "INT64", t)])) for t in tokens)
    )
    for t, response in zip(tokens, responses, strict=True):
        expected = run_directly(store / "embed" / "1", {"tokens": t})["score"]
        np.testing.assert_array_equal(response.outputs[0].data, expected)


@pytest.fixture(params=["loop", "thread"])
def compute_thread(request: pytest.FixtureRequest) -> bool:
    """False runs batches on the event loop, True on the batcher's compute thread."""
    return bool(request.param == "thread")


async def test_a_failed_run_fails_every_request_in_its_batch(compute_thread: bool) -> None:
    def broken(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("the model exploded")

    batcher = Batcher(broken, compute_thread, max_batch_size=8, max_queue_delay=0.01)
    runs = [batcher.run({"x": np.zeros((1, 2), np.float32)}) for _ in range(3)]
    results = await asyncio.gather(*runs, return_exceptions=True)
    batcher.close()
    await batcher.wait_closed()
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


async def test_a_request_larger_than_the_batch_limit_runs_alone(compute_thread: bool) -> None:
    def echo(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": feeds["x"] * 2}

    batcher = Batcher(echo, compute_thread, max_batch_size=4, max_queue_delay=0.01)
    sizes = [3, 6, 1, 2]
    results = await asyncio.gather(*(batcher.run({"x": np.full((n, 1), n, np.float32)}) for n in sizes))
    batcher.close()
    await batcher.wait_closed()
    for n, result in zip(sizes, results, strict=True):
        np.testing.assert_array_equal(result["y"], np.full((n, 1), 2 * n))
    assert max(batcher.stats.sizes) == 6 and batcher.stats.requests == 4


async def test_a_models_config_sets_its_batching(store: Path) -> None:
    (store / "embed" / "config.yaml").write_text("max_batch_size: 2\nmax_queue_delay: 0.01\nsequence_batch_delay: 0\n")
    (store / "lstm" / "config.yaml").write_text("batching: false\n")
    plane = build_dataplane(Settings(store=store, device="cpu"))
    try:
        tokens = np.array([[1, 2]], dtype=np.int64)
        await asyncio.gather(
            *(plane.infer(InferRequest("embed", inputs=[Tensor("tokens", "INT64", tokens)])) for _ in range(6))
        )
        assert max(_stats_of(plane, "embed").sizes) == 2
        options = plane.store.get_ready("embed").runner.settings
        assert (options.max_queue_delay, options.sequence_batch_delay) == (0.01, 0)
        await plane.infer(InferRequest("lstm", inputs=[Tensor("x", "FP32", np.zeros((1, 1, 3), np.float32))]))
        assert plane.store.get_ready("lstm").runner.batch_stats is None
    finally:
        (store / "embed" / "config.yaml").unlink()
        (store / "lstm" / "config.yaml").unlink()
        await plane.close()


# -- when a batch closes: full, every streaming session in, or the delay ---------------------------


def _double(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": feeds["x"] * 2}


def _one() -> dict[str, np.ndarray]:
    return {"x": np.ones((1, 2), np.float32)}


async def test_a_lone_stream_does_not_wait_for_the_delay(compute_thread: bool) -> None:
    batcher = Batcher(_double, compute_thread, max_batch_size=8, sequence_batch_delay=5.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for step in range(3):
        await asyncio.wait_for(batcher.run(_one(), session="s1", ends=step == 2), 2.0)
    batcher.close()
    await batcher.wait_closed()
    assert loop.time() - started < 1.0  # nobody else streams: each step runs at once
    assert batcher.stats.runs == 3


async def test_steps_wait_for_every_streaming_session_then_run_together(compute_thread: bool) -> None:
    batcher = Batcher(_double, compute_thread, max_batch_size=8, sequence_batch_delay=5.0)
    sessions = [f"s{i}" for i in range(4)]
    await asyncio.gather(*(batcher.run(_one(), session=s) for s in sessions))  # all four now stream

    async def late(session: str) -> dict[str, np.ndarray]:
        await asyncio.sleep(0.05)  # the last step comes later; the batch waits for it, not for 5 s
        return await batcher.run(_one(), session=session)

    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.run(_one(), session=s) for s in sessions[:3]), late(sessions[3])), 2.0
    )
    batcher.close()
    await batcher.wait_closed()
    assert all(np.array_equal(r["y"], np.full((1, 2), 2.0)) for r in results)
    assert batcher.stats.sizes.get(4, 0) >= 1, batcher.stats.sizes


async def test_more_streams_than_a_batch_holds_close_full_batches_without_waiting(
    compute_thread: bool,
) -> None:
    batcher = Batcher(_double, compute_thread, max_batch_size=4, sequence_batch_delay=5.0)
    sessions = [f"s{i}" for i in range(8)]
    await asyncio.gather(*(batcher.run(_one(), session=s) for s in sessions))  # eight streams

    async def later(session: str) -> dict[str, np.ndarray]:
        await asyncio.sleep(0.02)  # arrives while the batch waits for the other seven
        return await batcher.run(_one(), session=session)

    # Four steps fill a batch: it must not wait for the other four streams.
    await asyncio.wait_for(asyncio.gather(batcher.run(_one(), session="s0"), *map(later, sessions[1:4])), 1.0)
    batcher.close()
    await batcher.wait_closed()
    assert batcher.stats.sizes.get(4, 0) >= 3, batcher.stats.sizes


async def test_an_ended_or_quiet_session_is_not_waited_for(compute_thread: bool) -> None:
    batcher = Batcher(_double, compute_thread, max_batch_size=8, sequence_batch_delay=5.0)
    await asyncio.gather(batcher.run(_one(), session="ends", ends=True), batcher.run(_one(), session="stays"))
    # "ends" ended: the next step of "stays" is alone in streaming and runs at once.
    await asyncio.wait_for(batcher.run(_one(), session="stays"), 1.0)
    await asyncio.sleep(0.2)  # longer than ACTIVE_WINDOW: "stays" no longer counts as streaming ...
    await asyncio.wait_for(batcher.run(_one(), session="new"), 1.0)  # ... so "new" does not wait for it
    batcher.close()
    await batcher.wait_closed()


async def test_stateless_requests_wait_up_to_the_delay_for_company(compute_thread: bool) -> None:
    batcher = Batcher(_double, compute_thread, max_batch_size=8, max_queue_delay=0.2)

    async def later() -> dict[str, np.ndarray]:
        await asyncio.sleep(0.05)
        return await batcher.run(_one())

    await asyncio.gather(batcher.run(_one()), later())
    batcher.close()
    await batcher.wait_closed()
    assert batcher.stats.sizes == {2: 1}


async def test_closing_lets_queued_runs_finish_then_refuses_new_ones(compute_thread: bool) -> None:
    batcher = Batcher(_double, compute_thread, max_batch_size=2, max_queue_delay=0.05)
    queued = [asyncio.ensure_future(batcher.run(_one())) for _ in range(5)]
    await asyncio.sleep(0)  # all five are queued; the first batch waits for company
    batcher.close()
    results = await asyncio.gather(*queued)
    assert all(np.array_equal(r["y"], np.full((1, 2), 2)) for r in results)
    await batcher.wait_closed()
    with pytest.raises(ModelNotReady, match="unloaded"):
        await batcher.run(_one())


async def test_a_batcher_closed_from_another_thread_ends_its_task() -> None:
    batcher = Batcher(_double, True)
    await batcher.run(_one())
    await asyncio.to_thread(batcher.close)  # the store unloads versions from its scanning thread
    await asyncio.wait_for(batcher.wait_closed(), 1.0)
    assert batcher._task is not None and batcher._task.done()


async def test_turning_batching_off_in_config_yaml_hands_over_without_losing_a_request(tmp_path: Path) -> None:
    write_embedding_model(tmp_path, "embed", 1)
    plane = build_dataplane(Settings(store=tmp_path, device="cpu", max_queue_delay=0.05))
    tokens = [Tensor("tokens", "INT64", np.array([[1, 2]], dtype=np.int64))]
    try:
        runner = plane.store.get_ready("embed").runner
        old = runner.batcher
        in_flight = [asyncio.ensure_future(plane.infer(InferRequest("embed", inputs=tokens))) for _ in range(4)]
        await asyncio.sleep(0)  # queued in the batcher, which waits up to 50 ms for company
        (tmp_path / "embed" / "config.yaml").write_text("batching: false\n")
        plane.store.scan()
        assert runner.batcher is None and old is not None
        after = await plane.infer(InferRequest("embed", inputs=tokens))
        for response in [*await asyncio.gather(*in_flight), after]:
            assert response.outputs[0].data.shape == (1, 2)
        await old.wait_closed()
    finally:
        await plane.close()
