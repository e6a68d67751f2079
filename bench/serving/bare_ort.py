"""The floor for the model itself: the exported graph run in a loop in this process, states fed back.

This is what a step costs with no server at all — no protocol, no session store, no batcher — at a
given batch size; the server's throughput at the same batch size is compared to it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from seqserve.store.signature import Signature


@dataclass
class BareResult:
    batch: int
    threads: str  # "1" or "default"
    runs: int
    ms_per_run: float
    steps_per_s: float


def measure(model_dir: Path, batch: int, threads: int, seconds: float) -> BareResult:
    """Runs single-timestep batches for about `seconds`; threads 0 means ORT's default (all cores, spinning)."""
    signature = Signature.read(model_dir)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    features = signature.inputs[0].shape[-1]
    x = np.random.default_rng(0).standard_normal((batch, 1, features), dtype=np.float32)
    states = {s.input: np.zeros((batch, *s.shape[1:]), np.float32) for s in signature.states}
    names = [o.name for o in signature.outputs] + [s.output for s in signature.states]
    feeds_of = [(i + len(signature.outputs), s.input) for i, s in enumerate(signature.states)]

    def step() -> None:
        values = session.run(names, {signature.inputs[0].name: x, **states})
        for index, name in feeds_of:
            states[name] = values[index]

    for _ in range(5):  # lazy allocations and the first-run kernel choices stay out of the timing
        step()
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        step()
        runs += 1
    return BareResult(batch, str(threads) if threads else "default", runs, 1e3 * elapsed / runs,
                      batch * runs / elapsed)  # fmt: skip
