"""seqserve's data plane driven in process, no network: what the server costs without gRPC.

N sessions call `DataPlane.infer` concurrently on one event loop, exactly as the gRPC servicer does
after decoding (sequence parameters, one timestep each), so session lookup, validation, the batcher
(gather states, one ORT run, scatter) and the state store are all in, and the protocol is out. Set
against bare ORT and the full server under the same N, it splits the server's cost per step into
protocol vs the rest. It also times the gRPC converters (protobuf <-> records) for one step alone.

    python -m serving.inprocess --store DIR --sessions 64 --duration 5 [--batching false]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import numpy as np

from serving.stats import cpu_seconds, latency_summary


async def _session(dataplane: object, index: int, features: int, stop: list[bool], latencies: list[float]) -> None:
    from seqserve.inference import InferRequest, Tensor

    x = np.random.default_rng(index).standard_normal((1, 1, features), dtype=np.float32)
    infer = dataplane.infer  # type: ignore[attr-defined]
    sequence_id = index + 1
    await infer(InferRequest("lstm", inputs=[Tensor("x", "FP32", x)], parameters={
        "sequence_id": sequence_id, "sequence_start": True}))  # fmt: skip
    clock = time.perf_counter
    while not stop[0]:
        began = clock()
        await infer(InferRequest("lstm", inputs=[Tensor("x", "FP32", x)], parameters={"sequence_id": sequence_id}))
        latencies.append(clock() - began)
        # A step that never suspends (batching off runs ORT inline) would starve every other task; the
        # server yields here anyway, waiting for the stream's next message.
        await asyncio.sleep(0)
    await infer(InferRequest("lstm", inputs=[Tensor("x", "FP32", x)], parameters={
        "sequence_id": sequence_id, "sequence_end": True}))  # fmt: skip


async def drive(args: argparse.Namespace) -> dict[str, object]:
    from seqserve.config import Settings
    from seqserve.server import build_dataplane

    settings = Settings(store=args.store, device="cpu", batching=args.batching, store_poll_seconds=0)
    dataplane = build_dataplane(settings)
    stop, latencies = [False], []
    tasks = [asyncio.create_task(_session(dataplane, i, args.features, stop, latencies)) for i in range(args.sessions)]
    await asyncio.sleep(args.warmup)
    first, cpu0, started = len(latencies), cpu_seconds(), time.perf_counter()
    await asyncio.sleep(args.duration)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    window = latencies[first:]
    stop[0] = True
    await asyncio.gather(*tasks)
    await dataplane.close()
    return {
        "sessions": args.sessions,
        "batching": args.batching,
        "steps_per_s": len(window) / seconds,
        "latency_ms": latency_summary(window),
        "cpu_ms_per_step": 1e3 * cpu / max(len(window), 1),
        "cores": cpu / seconds,
        "converters_us_per_step": converters_cost(args.features),
    }


def converters_cost(features: int, repeat: int = 3000) -> float:
    """Microseconds to decode one step's ModelInferRequest and encode its response (the gRPC adapter's work)."""
    from seqserve.grpc import converters
    from seqserve.grpc.generated import grpc_service_pb2 as pb
    from seqserve.inference import InferResponse, Tensor

    request = pb.ModelInferRequest(model_name="lstm")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1, features])
    request.raw_input_contents.append(bytes(4 * features))
    request.parameters["sequence_id"].int64_param = 7
    output = np.zeros((1, 1, 512), np.float32)
    response = InferResponse("lstm", "1", None, [Tensor("lstm_1", "FP32", output)], {"sequence_step": 3})
    began = time.perf_counter()
    for _ in range(repeat):
        converters.infer_request_from_proto(request)
        pb.ModelStreamInferResponse(infer_response=converters.infer_response_to_proto(response))
    return 1e6 * (time.perf_counter() - began) / repeat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--batching", type=lambda v: v.lower() in ("1", "true", "yes"), default=True)
    args = parser.parse_args(argv)
    json.dump(asyncio.run(drive(args)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
