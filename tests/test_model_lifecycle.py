"""A model version frees everything it loaded when it leaves the store, however often it comes back.

The server's own store-following and session-sweeping tasks run here as in `seqserve serve`, a
stream keeps stepping on another model throughout, and version 2 of a 6 MB LSTM is added, used by
sessions, removed and added again, over and over. Measured, not eyeballed: the version's ONNX
Runtime model is garbage once it is unloaded, and the process's threads, event-loop tasks and
resident memory are the same after the last cycle as after the first few.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from helpers.onnx_models import write_lstm_model
from seqserve.config import Settings
from seqserve.inference import InferRequest, Tensor
from seqserve.runner import ModelRunner
from seqserve.server import _follow_store, _sweep_sessions, build_dataplane

FEATURES, UNITS = 256, 512  # 6.3 MB of weights: a leaked version would show in resident memory
CYCLES, SETTLED = 24, 4  # counts are compared between cycle SETTLED and the last one


def _threads() -> int:
    """Every thread of the process, ONNX Runtime's native ones included."""
    return len(os.listdir("/proc/self/task"))


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _step(sequence: str, version: str | None = None, model: str = "m", **control: object) -> InferRequest:
    x = np.random.default_rng(len(sequence)).standard_normal((2, 1, FEATURES), dtype=np.float32)
    parameters = {"sequence_id": sequence, **control}
    return InferRequest(model, model_version=version, inputs=[Tensor("x", "FP32", x)], parameters=parameters)


async def _eventually(condition: Any, what: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


async def test_versions_removed_and_readded_while_serving_free_what_they_loaded(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_lstm_model(store, "m", 1, stateful=True, features=FEATURES, units=UNITS)
    # Sessions left open on a removed version expire (and the sweeper drops them) after 0.3 s idle.
    (store / "m" / "config.yaml").write_text("max_sequence_idle: 0.3\n")
    write_lstm_model(store, "steady", 1, stateful=True, features=FEATURES, units=UNITS)
    # A compute thread per version (batch_compute=thread), so a version that kept its thread would show.
    settings = Settings(store=store, device="cpu", batch_compute="thread", store_poll_seconds=0)
    plane = build_dataplane(settings)
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: loop_errors.append(context))
    background = [
        asyncio.create_task(_follow_store(plane, 0.02)),
        asyncio.create_task(_sweep_sessions(plane, 0.1)),
    ]
    stop = asyncio.Event()

    async def stream_on_another_model() -> int:
        await plane.infer(_step("s", model="steady", sequence_start=True))
        steps = 1
        while not stop.is_set():
            await plane.infer(_step("s", model="steady"))
            steps += 1
            await asyncio.sleep(0.005)
        return steps

    steady = asyncio.create_task(stream_on_another_model())
    counts: list[tuple[int, int, float]] = []
    try:
        for cycle in range(CYCLES):
            write_lstm_model(store, "m", 2, seed=cycle, stateful=True, features=FEATURES, units=UNITS)
            await _eventually(lambda: any(v.version == 2 for v in plane.store.versions("m")), "version 2 loaded")
            runner: ModelRunner = plane.store.get_ready("m", "2").runner
            # Weak references only: the runner, its model and its batcher must be free to go.
            freed = [weakref.ref(o) for o in (runner, runner.model, runner.batcher)]
            del runner
            sessions = [f"c{cycle}-s{k}" for k in range(3)]
            for sequence in sessions:
                await plane.infer(_step(sequence, "2", sequence_start=True))
            await asyncio.gather(*(plane.infer(_step(sequence)) for sequence in sessions))  # one batch
            await plane.infer(InferRequest("m", "2", inputs=_step("-").inputs))  # a stateless request too
            if cycle % 2:  # the sessions end: the version unloads at the next scan
                await asyncio.gather(*(plane.infer(_step(s, sequence_end=True)) for s in sessions))
            # (else they are left open: it unloads once they have expired and been swept)
            shutil.rmtree(store / "m" / "2")
            # A batcher whose task still ran would hold its model: all three gone means all ended.
            await _eventually(lambda refs=freed: not gc.collect() and all(r() is None for r in refs), "it is freed")
            counts.append((_threads(), len(asyncio.all_tasks()), _resident_mib()))
    finally:
        stop.set()
        steps = await steady
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await plane.close()
        loop.set_exception_handler(None)
    threads, tasks, resident = zip(*counts, strict=True)
    print(f"threads {threads}\ntasks {tasks}\nresident MiB {[round(r, 1) for r in resident]}\nsteady steps {steps}")
    assert threads[SETTLED:] == (threads[SETTLED],) * (CYCLES - SETTLED)
    assert tasks[SETTLED:] == (tasks[SETTLED],) * (CYCLES - SETTLED)
    # One version kept alive would add its ~6 MB of weights (more with ORT's copies) every cycle.
    assert resident[-1] - resident[SETTLED] < 16, resident
    assert loop_errors == [], loop_errors  # e.g. "Task was destroyed but it is pending!"
    assert steps > CYCLES
