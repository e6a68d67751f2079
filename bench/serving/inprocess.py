"""seqserve without the network, next to bare ONNX Runtime in the same process: what the engine costs.

Three loads on one loaded model version, measured in interleaved windows of one process, so that
whatever the host does meanwhile falls on all three alike (a ratio of two numbers taken minutes
apart on a shared VM moved by up to 40%):

- `bare`: the model's own ORT session run in a loop at batch N, states fed back: the floor.
- `batcher`: the batching engine as issue 5 defines it (gather states, run, scatter). N sessions on
  one event loop, each holding its states packed into one read-only buffer as a session record does,
  step through `Batcher.run` (the server's batching options): the batcher stacks the N steps and their
  states, ORT runs them once, each session gets its slice back and packs its new states (the copy
  that detaches them from the batch).
- `data_plane`: N sessions call `DataPlane.infer` exactly as the gRPC servicer does after decoding
  (sequence parameters, one timestep each): the batcher plus validation, session turns, the session
  store and metrics. The protocol alone is what the served rows add to this.

It also times the gRPC converters (protobuf <-> records) for one step alone.

    python -m serving.inprocess --store DIR --sessions 64 --seconds 6 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from serving.stats import cpu_seconds, latency_summary

MODES = ("bare", "batcher", "data_plane")
MODEL = "lstm"

# One session's step loop: called with (session index, stop flag, latencies) until the flag is set.
SessionLoop = Callable[[int, list[bool], list[float]], Awaitable[None]]


class Engine:
    """The loaded model and the three ways of stepping N sessions through it."""

    def __init__(self, store: str, features: int) -> None:
        from seqserve.batching import Batcher
        from seqserve.config import Settings
        from seqserve.server import build_dataplane

        settings = Settings(store=store, device="cpu", batching=True, store_poll_seconds=0, max_sequence_idle=0)
        self.dataplane = build_dataplane(settings)
        runner = self.dataplane.store.get_ready(MODEL).runner
        self.model, self.signature = runner.model, runner.signature
        options = runner.settings
        self.batcher = Batcher(self.model.run, False, max_batch_size=options.max_batch_size,
                               max_queue_delay=options.max_queue_delay,
                               sequence_batch_delay=options.sequence_batch_delay)  # fmt: skip
        self.features = features
        self.next_id = 1

    def x(self, index: int, batch: int = 1) -> np.ndarray:
        return np.random.default_rng(index).standard_normal((batch, 1, self.features), dtype=np.float32)

    def bare(self, batch: int, seconds: float) -> tuple[int, float]:
        """Runs batches of `batch` single steps for `seconds` (the event loop is blocked meanwhile: nothing
        else is scheduled). Returns (runs, elapsed)."""
        model, signature = self.model, self.signature
        feeds = {signature.inputs[0].name: self.x(0, batch), **model.zero_states(batch)}
        runs, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            outputs = model.run(feeds)
            for spec in signature.states:
                feeds[spec.input] = outputs[spec.output]
            runs += 1
        return runs, elapsed

    async def batcher_session(self, index: int, stop: list[bool], latencies: list[float]) -> None:
        from seqserve.sessions.packed import pack

        signature, run = self.signature, self.batcher.run
        x_name, key = signature.inputs[0].name, f"bench/{index}"
        x = self.x(index)
        states = pack(self.model.zero_states(1))
        clock = time.perf_counter
        while not stop[0]:
            began = clock()
            outputs = await run({x_name: x, **states}, session=key)
            states = pack({spec.input: outputs[spec.output] for spec in signature.states})
            latencies.append(clock() - began)
            await asyncio.sleep(0)  # see data_plane_session
        await run({x_name: x, **states}, session=key, ends=True)  # so the next window does not wait for it

    async def data_plane_session(self, index: int, stop: list[bool], latencies: list[float]) -> None:
        from seqserve.inference import InferRequest, Tensor

        infer, x = self.dataplane.infer, self.x(index)
        sequence_id, self.next_id = self.next_id, self.next_id + 1

        def request(**control: object) -> InferRequest:
            parameters = {"sequence_id": sequence_id, **control}
            return InferRequest(MODEL, inputs=[Tensor("x", "FP32", x)], parameters=parameters)

        await infer(request(sequence_start=True))
        clock = time.perf_counter
        while not stop[0]:
            began = clock()
            await infer(request())
            latencies.append(clock() - began)
            # A step that never suspends (a lone stream's step runs at once) would starve every other
            # task; in the server the session's task waits here for the stream's next message anyway.
            await asyncio.sleep(0)
        await infer(request(sequence_end=True))


async def _window(mode: str, engine: Engine, sessions: int, warmup: float, seconds: float) -> dict[str, Any]:
    """One measured window of one mode, after `warmup` seconds of the same load."""
    if mode == "bare":
        engine.bare(sessions, warmup)
        cpu0 = cpu_seconds()
        runs, elapsed = engine.bare(sessions, seconds)
        return {"steps": runs * sessions, "seconds": elapsed, "cpu_s": cpu_seconds() - cpu0, "latencies": []}
    loop: SessionLoop = engine.batcher_session if mode == "batcher" else engine.data_plane_session
    stop, latencies = [False], []
    tasks = [asyncio.create_task(loop(i, stop, latencies)) for i in range(sessions)]
    await asyncio.sleep(warmup)
    first, cpu0, started = len(latencies), cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    window = latencies[first:]
    stop[0] = True
    await asyncio.gather(*tasks)
    return {"steps": len(window), "seconds": elapsed, "cpu_s": cpu, "latencies": window}


def _summary(windows: list[dict[str, Any]]) -> dict[str, Any]:
    steps, seconds = sum(w["steps"] for w in windows), sum(w["seconds"] for w in windows)
    return {
        "steps_per_s": steps / seconds,
        "steps_per_s_per_window": [w["steps"] / w["seconds"] for w in windows],
        "cpu_ms_per_step": 1e3 * sum(w["cpu_s"] for w in windows) / max(steps, 1),
        "latency_ms": latency_summary([x for w in windows for x in w["latencies"]]),
    }


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    engine = Engine(args.store, args.features)
    windows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    try:
        window = args.seconds / args.rounds
        for _ in range(args.rounds):
            for mode in MODES:
                windows[mode].append(await _window(mode, engine, args.sessions, args.warmup, window))
    finally:
        engine.batcher.close()
        await engine.dataplane.close()
    result: dict[str, Any] = {"sessions": args.sessions, "rounds": args.rounds}
    result.update({mode: _summary(windows[mode]) for mode in MODES})
    bare = result["bare"]["steps_per_s"]
    result["batcher_vs_bare"] = result["batcher"]["steps_per_s"] / bare
    result["data_plane_vs_bare"] = result["data_plane"]["steps_per_s"] / bare
    result["converters_us_per_step"] = converters_cost(args.features)
    return result


def converters_cost(features: int, repeat: int = 3000) -> float:
    """Microseconds to decode one step's ModelInferRequest and encode its response (the gRPC adapter's work)."""
    from seqserve.grpc import converters
    from seqserve.grpc.generated import grpc_service_pb2 as pb
    from seqserve.inference import InferResponse, Tensor

    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1, features])
    request.raw_input_contents.append(bytes(4 * features))
    request.parameters["sequence_id"].int64_param = 7
    output = np.zeros((1, 1, 512), np.float32)
    response = InferResponse(MODEL, "1", None, [Tensor("lstm_1", "FP32", output)], {"sequence_step": 3})
    began = time.perf_counter()
    for _ in range(repeat):
        converters.infer_request_from_proto(request)
        pb.ModelStreamInferResponse(infer_response=converters.infer_response_to_proto(response))
    return 1e6 * (time.perf_counter() - began) / repeat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="a model store holding the benchmark's model 'lstm'")
    parser.add_argument("--sessions", type=int, default=64, help="N: concurrent sessions, and bare ORT's batch")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per mode, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved windows per mode")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds of load before each window")
    parser.add_argument("--features", type=int, default=256)
    args = parser.parse_args(argv)
    json.dump(asyncio.run(drive(args)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
