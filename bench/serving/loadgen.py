"""The load generator: N concurrent sequences, each streaming single timesteps one after another.

It runs in a process of its own (`python -m serving.loadgen ...`, one JSON object on stdout), so the
server under test and the driver are separate processes whose CPU is counted apart: on a 2-core
machine a driver that costs as much as the server halves what the server can show.

It is kept cheap on purpose. Over gRPC every request is serialized once, before the run, and sent
as bytes through a stream-stream call without serializers; each answer is checked by its first byte
only (a ModelStreamInferResponse that carries `error_message`, field 1, starts with 0x0a; a good one
starts with `infer_response`, field 2, 0x12). Per step that leaves a write, a read and two clock
reads of Python. The REST mode (for the FastAPI baseline) posts pre-encoded JSON with aiohttp; the
`v2rest` mode posts KServe V2 requests to seqserve's REST endpoint with the binary tensor extension,
as tritonclient.http does, pre-encoded too, and checks the status code. The
`torchserve` mode drives TorchServe's own bidirectional gRPC stream (StreamPredictions2) the same way
as the KServe one: requests encoded once by hand (no TorchServe stubs needed), answers checked by
their first byte.

A step counts when its answer arrives inside the measured window, which opens after a warm-up;
the server's CPU time and its /metrics are read at the window's edges, by this process, so that
they cover exactly the steps counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import aiohttp
import grpc
import numpy as np

from seqserve.grpc.generated import grpc_service_pb2 as pb
from serving.stats import cpu_seconds, latency_summary, machine_busy_seconds, main_thread_cpu_seconds, tree_cpu_seconds

STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
_GOOD_ANSWER = 0x12  # tag of ModelStreamInferResponse.infer_response (field 2, length-delimited)
TORCHSERVE_STREAM_METHOD = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/StreamPredictions2"
_TORCHSERVE_GOOD_ANSWER = 0x0A  # tag of PredictionResponse.prediction (field 1); errors carry status, 0x1a


@dataclass
class Window:
    """The measured interval; sessions look at it after each answer (no locks: one event loop)."""

    open: bool = False
    done: bool = False
    started: float = 0.0
    ended: float = 0.0


@dataclass
class SessionResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None


@dataclass
class LoadResult:
    """What one driver run measured; `server_*` fields are the server's, read at the window's edges."""

    protocol: str
    sessions: int
    seconds: float
    steps: int
    steps_per_s: float
    latency_ms: dict[str, float]
    errors: int
    first_error: str | None
    per_session_steps_min: int
    per_session_steps_max: int
    driver_cpu_s: float
    server_cpu_s: float | None
    server_main_thread_cpu_s: float | None
    machine_busy_s: float
    metrics_before: str | None
    metrics_after: str | None


# -- gRPC ModelStreamInfer -------------------------------------------------------------------------


def stream_requests(model: str, features: int, sequence_id: int) -> tuple[bytes, bytes, bytes]:
    """The serialized start, step and end requests of one sequence: x is [1, 1, features] FP32 raw."""
    x = np.random.default_rng(sequence_id).standard_normal((1, 1, features), dtype=np.float32)

    def message(**flags: bool) -> bytes:
        request = pb.ModelInferRequest(model_name=model)
        request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
        request.raw_input_contents.append(x.tobytes())
        request.parameters["sequence_id"].int64_param = sequence_id
        for name, value in flags.items():
            request.parameters[name].bool_param = value
        return request.SerializeToString()

    return message(sequence_start=True), message(), message(sequence_end=True)


def _error_text(answer: bytes) -> str:
    return pb.ModelStreamInferResponse.FromString(answer).error_message or f"unexpected answer {answer[:16]!r}"


# -- TorchServe's StreamPredictions2 (its inference.proto, encoded by hand) ---------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def torchserve_request(model: str, sequence_id: str, inputs: dict[str, bytes]) -> bytes:
    """A serialized PredictionsRequest: model_name = 1, map<string, bytes> input = 3, sequence_id = 4."""
    message = _length_delimited(1, model.encode())
    for key, value in inputs.items():  # a map entry is a message of key = 1, value = 2
        message += _length_delimited(3, _length_delimited(1, key.encode()) + _length_delimited(2, value))
    return message + _length_delimited(4, sequence_id.encode())


def torchserve_requests(model: str, features: int, sequence_id: int) -> tuple[bytes, bytes, bytes]:
    """Start, step and end requests of one sequence for bench/baselines/torchserve/lstm_handler.py: input
    `data` is x [1, 1, features] FP32 raw; inputs `sequence_start` / `sequence_end` mark the ends."""
    x = np.random.default_rng(sequence_id).standard_normal((1, 1, features), dtype=np.float32).tobytes()
    name = f"seq-{sequence_id}"
    return (
        torchserve_request(model, name, {"data": x, "sequence_start": b"1"}),
        torchserve_request(model, name, {"data": x}),
        torchserve_request(model, name, {"data": x, "sequence_end": b"1"}),
    )


def _torchserve_error_text(answer: bytes) -> str:
    # PredictionResponse.status is a google.rpc.Status; its message is readable in the raw bytes.
    return f"error answer {answer[:200]!r}"


# -- the gRPC session, either API ------------------------------------------------------------------


async def _grpc_session(
    channel: grpc.aio.Channel, requests: tuple[bytes, bytes, bytes], window: Window, torchserve: bool = False
) -> SessionResult:
    start, step, end = requests
    method, good = (TORCHSERVE_STREAM_METHOD, _TORCHSERVE_GOOD_ANSWER) if torchserve else (STREAM_METHOD, _GOOD_ANSWER)
    error_text = _torchserve_error_text if torchserve else _error_text
    result = SessionResult()
    call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)()
    clock, latencies = time.perf_counter, result.latencies
    await call.write(start)
    answer = await call.read()
    if answer[0] != good:
        raise RuntimeError(f"sequence start failed: {error_text(answer)}")
    while not window.done:
        began = clock()
        await call.write(step)
        answer = await call.read()
        ended = clock()
        if answer[0] != good:
            result.errors += 1
            result.first_error = result.first_error or error_text(answer)
        elif window.open:
            latencies.append(ended - began)
    # The last answer is read before closing: TorchServe 0.12 completes the call on the client's
    # half-close, and an answer that comes after that fails its worker.
    await call.write(end)
    await call.read()
    await call.done_writing()
    return result


async def _run_grpc(
    target: str,
    sessions: int,
    channels: int,
    model: str,
    features: int,
    first_id: int,
    window: Window,
    control: Callable[[], Awaitable[None]],
    torchserve: bool = False,
) -> list[SessionResult]:
    # A local subchannel pool per channel: otherwise channels to one target share one connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    opened = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    encode = torchserve_requests if torchserve else stream_requests
    try:
        for channel in opened:
            await asyncio.wait_for(channel.channel_ready(), 30)
        tasks = [
            _grpc_session(opened[i % channels], encode(model, features, first_id + i), window, torchserve)
            for i in range(sessions)
        ]
        results = await asyncio.gather(control(), *tasks)
        return list(results[1:])
    finally:
        for channel in opened:
            await channel.close()


# -- REST (JSON), for the FastAPI + Keras baseline -------------------------------------------------


async def _rest_session(
    client: aiohttp.ClientSession, url: str, index: int, features: int, window: Window
) -> SessionResult:
    session = f"s{index}"
    x = np.random.default_rng(index).standard_normal(features).round(5).tolist()
    start = json.dumps({"session": session, "x": x, "start": True}).encode()
    step = json.dumps({"session": session, "x": x}).encode()
    headers = {"content-type": "application/json"}
    result, clock = SessionResult(), time.perf_counter
    async with client.post(url, data=start, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"session start failed: {response.status} {await response.text()}")
        await response.read()
    while not window.done:
        began = clock()
        async with client.post(url, data=step, headers=headers) as response:
            await response.read()
            ok = response.status == 200
        ended = clock()
        if not ok:
            result.errors += 1
            result.first_error = result.first_error or f"HTTP {response.status}"
        elif window.open:
            result.latencies.append(ended - began)
    return result


async def _run_rest(
    url: str, sessions: int, features: int, window: Window, control: Callable[[], Awaitable[None]]
) -> list[SessionResult]:
    connector = aiohttp.TCPConnector(limit=sessions)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:
        tasks = [_rest_session(client, url, i, features, window) for i in range(sessions)]
        results = await asyncio.gather(control(), *tasks)
    return list(results[1:])


# -- REST, KServe V2 with the binary tensor extension (what tritonclient.http sends), for seqserve --


def v2_rest_requests(features: int, sequence_id: int) -> tuple[tuple[bytes, str], ...]:
    """(body, Inference-Header-Content-Length) of the start, step and end requests of one sequence:
    x [1, 1, features] FP32 as binary data, every output asked for as binary data."""
    x = np.random.default_rng(sequence_id).standard_normal((1, 1, features), dtype=np.float32)

    def body(**flags: bool) -> tuple[bytes, str]:
        head = json.dumps({
            "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                        "parameters": {"binary_data_size": x.nbytes}}],
            "parameters": {"sequence_id": sequence_id, "binary_data_output": True, **flags},
        }).encode()  # fmt: skip
        return head + x.tobytes(), str(len(head))

    return body(sequence_start=True), body(), body(sequence_end=True)


async def _v2_rest_session(
    client: aiohttp.ClientSession, url: str, requests: tuple[tuple[bytes, str], ...], window: Window
) -> SessionResult:
    result, clock = SessionResult(), time.perf_counter

    async def post(request: tuple[bytes, str]) -> int:
        body, head_length = request
        headers = {"content-type": "application/octet-stream", "Inference-Header-Content-Length": head_length}
        async with client.post(url, data=body, headers=headers) as response:
            await response.read()
            return response.status

    start, step, end = requests
    if (status := await post(start)) != 200:
        raise RuntimeError(f"sequence start failed: HTTP {status}")
    while not window.done:
        began = clock()
        status = await post(step)
        ended = clock()
        if status != 200:
            result.errors += 1
            result.first_error = result.first_error or f"HTTP {status}"
        elif window.open:
            result.latencies.append(ended - began)
    await post(end)
    return result


async def _run_v2_rest(
    url: str, sessions: int, features: int, first_id: int, window: Window, control: Callable[[], Awaitable[None]]
) -> list[SessionResult]:
    connector = aiohttp.TCPConnector(limit=sessions)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:
        tasks = [
            _v2_rest_session(client, url, v2_rest_requests(features, first_id + i), window) for i in range(sessions)
        ]
        results = await asyncio.gather(control(), *tasks)
    return list(results[1:])


# -- the run ---------------------------------------------------------------------------------------


def _scrape(url: str | None) -> str | None:
    if url is None:
        return None
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@dataclass
class Readings:
    """Counters read at one edge of the measured window."""

    driver_cpu: float
    server_cpu: float | None
    server_main_cpu: float | None
    machine_busy: float
    metrics: str | None


async def _read(args: argparse.Namespace) -> Readings:
    """The counters at one window edge. The server's CPU is its process's, or with --server-tree its
    whole process tree's; its "main" part is its main thread's, or the --server-main-pid process's."""
    metrics = await asyncio.to_thread(_scrape, args.metrics_url)
    server_cpu = server_main = None
    if args.server_pid:
        server_cpu = (tree_cpu_seconds if args.server_tree else cpu_seconds)(args.server_pid)
        server_main = (
            cpu_seconds(args.server_main_pid) if args.server_main_pid else main_thread_cpu_seconds(args.server_pid)
        )
    return Readings(cpu_seconds(), server_cpu, server_main, machine_busy_seconds(), metrics)


def _difference(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


async def run(args: argparse.Namespace) -> LoadResult:
    window = Window()
    edges: list[Readings] = []

    async def control() -> None:
        """Warm-up, then the window; its edges read the clock, both processes' CPU and /metrics."""
        await asyncio.sleep(args.warmup)
        edges.append(await _read(args))
        window.started, window.open = time.perf_counter(), True
        await asyncio.sleep(args.duration)
        window.ended, window.open = time.perf_counter(), False
        edges.append(await _read(args))
        window.done = True

    if args.protocol in ("grpc", "torchserve"):
        results = await _run_grpc(
            args.target, args.sessions, args.channels, args.model, args.features, args.first_id, window, control,
            torchserve=args.protocol == "torchserve",
        )  # fmt: skip
    elif args.protocol == "v2rest":
        results = await _run_v2_rest(args.target, args.sessions, args.features, args.first_id, window, control)
    else:
        results = await _run_rest(args.target, args.sessions, args.features, window, control)
    before, after = edges
    latencies = [x for r in results for x in r.latencies]
    if args.latencies_out:
        np.save(args.latencies_out, np.asarray(latencies, dtype=np.float64))
    seconds = window.ended - window.started
    failed = [r for r in results if r.errors]
    return LoadResult(
        protocol=args.protocol,
        sessions=args.sessions,
        seconds=seconds,
        steps=len(latencies),
        steps_per_s=len(latencies) / seconds,
        latency_ms=latency_summary(latencies),
        errors=sum(r.errors for r in results),
        first_error=failed[0].first_error if failed else None,
        per_session_steps_min=min(len(r.latencies) for r in results),
        per_session_steps_max=max(len(r.latencies) for r in results),
        driver_cpu_s=after.driver_cpu - before.driver_cpu,
        server_cpu_s=_difference(before.server_cpu, after.server_cpu),
        server_main_thread_cpu_s=_difference(before.server_main_cpu, after.server_main_cpu),
        machine_busy_s=after.machine_busy - before.machine_busy,
        metrics_before=before.metrics,
        metrics_after=after.metrics,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=["grpc", "rest", "v2rest", "torchserve"], default="grpc",
                        help="grpc: KServe ModelStreamInfer; rest: the FastAPI baseline's JSON; v2rest: KServe V2 "
                        "REST with binary tensors; torchserve: TorchServe's gRPC StreamPredictions2")  # fmt: skip
    parser.add_argument("--target", required=True, help="gRPC host:port, or the REST step URL")
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1, help="gRPC channels (TCP connections) the sessions share")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before the window opens")
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--first-id", type=int, default=1, help="sequence id of the first session")
    parser.add_argument("--server-pid", type=int, default=None, help="read this process's CPU at the window edges")
    parser.add_argument(
        "--server-tree",
        action="store_true",
        help="count the CPU of --server-pid's whole process tree (servers of several processes)",
    )
    parser.add_argument(
        "--server-main-pid",
        type=int,
        default=None,
        help="report this process's CPU as the server's main part (default: its main thread)",
    )
    parser.add_argument("--metrics-url", default=None, help="scrape this Prometheus endpoint at the window edges")
    parser.add_argument("--latencies-out", default=None, help="also save every step's latency (s) to this .npy")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = asyncio.run(run(args))
    json.dump(asdict(result), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
