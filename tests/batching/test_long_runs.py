"""Runs over many timesteps leave the event loop: on a thread, without holding up the batches after them."""

from __future__ import annotations

import asyncio
import threading
import weakref

import numpy as np
import pytest

from seqserve.batching import Batcher
from seqserve.batching.direct import DirectRuns


def _timesteps(feeds: dict[str, np.ndarray]) -> int:
    return int(feeds["x"].shape[1])


class _Recorder:
    """A model whose long runs wait until released, and which notes the thread of every run."""

    def __init__(self) -> None:
        self.threads: dict[int, str] = {}
        self.release = threading.Event()

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        steps = _timesteps(feeds)
        self.threads[steps] = threading.current_thread().name
        if steps > 16:
            assert self.release.wait(5.0)
        return {"y": feeds["x"] * 2}


@pytest.mark.parametrize("compute_thread", [False, True])
async def test_a_long_run_goes_to_a_thread_and_later_short_runs_pass_it(compute_thread: bool) -> None:
    model = _Recorder()
    batcher = Batcher(model, compute_thread, max_batch_size=8, timesteps=_timesteps)
    long = asyncio.ensure_future(batcher.run({"x": np.ones((1, 1000, 1), np.float32)}))
    await asyncio.sleep(0.01)
    # The long run is under way on its thread; a short one is served meanwhile (on the loop or
    # the compute thread, as configured), and the loop is free to await it.
    short = await asyncio.wait_for(batcher.run({"x": np.ones((1, 1, 1), np.float32)}), 2.0)
    assert not long.done() and short["y"].shape == (1, 1, 1)
    model.release.set()
    assert (await long)["y"].shape == (1, 1000, 1)
    batcher.close()
    await batcher.wait_closed()
    assert model.threads[1000] != threading.current_thread().name
    assert (model.threads[1] == threading.current_thread().name) is not compute_thread


async def test_direct_runs_send_long_sequences_to_a_thread_even_with_few_elements() -> None:
    model = _Recorder()
    model.release.set()
    runs = DirectRuns(model, inline_max_elements=16384, on_run=lambda waited, ran: None, timesteps=_timesteps)
    await runs.run({"x": np.ones((1, 1000, 1), np.float32)})  # 1,000 elements, but 1,000 steps
    await runs.run({"x": np.ones((1, 1, 3), np.float32)})
    runs.close()
    assert model.threads[1000] != threading.current_thread().name
    assert model.threads[1] == threading.current_thread().name


@pytest.mark.parametrize("compute_thread", [False, True])
async def test_an_answered_request_leaves_nothing_of_its_tensors_behind(compute_thread: bool) -> None:
    batcher = Batcher(lambda feeds: {"y": feeds["x"] * 2}, compute_thread, timesteps=_timesteps)
    for steps in (1, 1000):  # short (on the loop or the compute thread) and long (on a thread of its own)
        x = np.ones((1, steps, 1), np.float32)
        alive = weakref.ref(x)
        result = await batcher.run({"x": x})
        del x, result
        await asyncio.sleep(0.01)  # the batcher is idle again, waiting for the next request
        assert alive() is None, f"a request of {steps} timesteps is still referenced"
    batcher.close()
    await batcher.wait_closed()
