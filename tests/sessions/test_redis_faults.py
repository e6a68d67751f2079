"""A real `seqserve serve` on a real redis-server that the test pauses (SIGSTOP), kills (SIGKILL) and
restarts, over TCP and over a Unix socket.

While the store does not answer, steps fail as 503 / UNAVAILABLE within the store timeout with a
message that names no address; liveness and /metrics keep answering at once (nothing waits for
Redis on the event loop); the server recovers without a restart and every sequence goes on from
its last answered step, its outputs exact.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

import grpc
import httpx
import numpy as np
import pytest
import redis

from helpers.onnx_models import run_directly, write_lstm_model
from helpers.server import RunningServer, free_port, running_server
from seqserve.grpc.generated import grpc_service_pb2 as pb
from seqserve.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceStub

STORE_TIMEOUT = 2.0  # SEQSERVE_SESSION_STORE_TIMEOUT
LATE = STORE_TIMEOUT + 3.0  # a refusal arriving later than this is a hang, not a timeout
PROMPT = 1.0  # liveness and metrics answer within this while Redis is stuck
ATOL = 1e-6
T = TypeVar("T")


class RedisProcess:
    """One redis-server that can be paused, killed and started again at the same address. It writes
    every change to its append-only file before answering, so a SIGKILL loses nothing answered."""

    def __init__(self, directory: Path, over: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.socket_path = directory / "redis.sock" if over == "unix" else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}" if self.socket_path else f"redis://127.0.0.1:{self.port}/0"

    def addresses(self) -> list[str]:
        """Whatever would tell a client where the store lives."""
        names = ["127.0.0.1", "localhost", str(self.port), "redis://", "unix:"]
        return names + ([str(self.socket_path), self.socket_path.name] if self.socket_path else [])

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (`make test` installs it)"
        where = (
            ["--port", "0", "--unixsocket", str(self.socket_path)] if self.socket_path else ["--port", str(self.port)]
        )
        self.process = subprocess.Popen(
            [binary, *where, "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                assert time.monotonic() < deadline and self.process.poll() is None, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def signal(self, number: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, number)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "models"
    write_lstm_model(root, "lstm", 1, stateful=True)
    return root


@pytest.fixture(params=["tcp", "unix"])
def redis_process(request: pytest.FixtureRequest) -> Iterator[RedisProcess]:
    # Short: a Unix socket's path must fit in 108 bytes, which pytest's tmp_path may not.
    directory = Path(tempfile.mkdtemp(prefix="seqserve-redis-"))
    process = RedisProcess(directory, request.param)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _rest_step(server: RunningServer, x: np.ndarray, step: int) -> httpx.Response:
    body = {
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
        "outputs": [{"name": "sequence"}],
        "parameters": {"sequence_id": "rest", "sequence_start": step == 1, "sequence_step": step},
    }
    return httpx.post(f"http://{server.http_url}/v2/models/lstm/infer", json=body, timeout=3 * LATE)


def _rest_output(answer: httpx.Response) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    return np.asarray(output["data"], np.float32).reshape(output["shape"])


def _grpc_step(stub: GRPCInferenceServiceStub, x: np.ndarray, step: int) -> np.ndarray:
    request = pb.ModelInferRequest(model_name="lstm")
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    request.outputs.add(name="sequence")
    request.parameters["sequence_id"].string_param = "grpc"
    request.parameters["sequence_start"].bool_param = step == 1
    request.parameters["sequence_step"].int64_param = step
    answer = stub.ModelInfer(request, timeout=3 * LATE)
    (output,) = answer.outputs
    return np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(list(output.shape))


def _refused_over_rest(server: RunningServer, x: np.ndarray, step: int, redis_process: RedisProcess) -> None:
    began = time.monotonic()
    answer = _rest_step(server, x, step)
    assert time.monotonic() - began < LATE
    assert answer.status_code == 503, answer.text
    _names_no_address(answer.json()["error"], redis_process)


def _refused_over_grpc(stub: GRPCInferenceServiceStub, x: np.ndarray, step: int, redis_process: RedisProcess) -> None:
    began = time.monotonic()
    with pytest.raises(grpc.RpcError) as refused:
        _grpc_step(stub, x, step)
    assert time.monotonic() - began < LATE
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
    _names_no_address(refused.value.details(), redis_process)


def _names_no_address(message: str, redis_process: RedisProcess) -> None:
    assert "session store" in message, message
    for address in redis_process.addresses():
        assert address not in message, f"{address!r} told to a client: {message}"


def _prompt(server: RunningServer, path: str) -> None:
    """`path` answers 200 within PROMPT seconds."""
    began = time.monotonic()
    answer = httpx.get(f"http://{server.http_url}{path}", timeout=LATE)
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - began < PROMPT, f"{path} took {time.monotonic() - began:.2f} s"


def _retried(send: Callable[[], T], deadline: float = 15.0) -> T:
    """What `send()` returns once the store answers again (a restarted one may take a moment to load)."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            result = send()
            if not isinstance(result, httpx.Response) or result.status_code != 503:
                return result
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        assert time.monotonic() < give_up, "the server did not recover"
        time.sleep(0.2)


def test_a_paused_killed_and_restarted_redis_fails_steps_in_time_and_sequences_go_on_exactly(
    store: Path, redis_process: RedisProcess
) -> None:
    x = np.random.default_rng(5).standard_normal((2, 4, 3)).astype(np.float32)
    steps = [x[:, t : t + 1] for t in range(4)]
    env = {"SEQSERVE_SESSION_STORE_TIMEOUT": str(STORE_TIMEOUT)}
    rest: list[np.ndarray] = []
    over_grpc: list[np.ndarray] = []
    with (
        running_server(store, "--sessions", redis_process.url, env=env) as server,
        grpc.insecure_channel(server.grpc_url) as channel,
    ):
        stub = GRPCInferenceServiceStub(channel)
        rest.append(_rest_output(_rest_step(server, steps[0], 1)))
        over_grpc.append(_grpc_step(stub, steps[0], 1))

        # Paused: every call waits until the store timeout. Probes and scrapes must not wait.
        redis_process.signal(signal.SIGSTOP)
        try:
            pending = threading.Thread(target=_refused_over_rest, args=(server, steps[1], 2, redis_process))
            pending.start()
            time.sleep(0.2)  # the step is waiting on Redis now
            _prompt(server, "/v2/health/live")
            _prompt(server, "/metrics")
            pending.join(timeout=2 * LATE)
            assert not pending.is_alive()
            _refused_over_grpc(stub, steps[1], 2, redis_process)
        finally:
            redis_process.signal(signal.SIGCONT)
        rest.append(_rest_output(_retried(partial(_rest_step, server, steps[1], 2))))
        over_grpc.append(_retried(partial(_grpc_step, stub, steps[1], 2)))

        # Killed: nothing listens at the address any more.
        redis_process.kill()
        _refused_over_rest(server, steps[2], 3, redis_process)
        _refused_over_grpc(stub, steps[2], 3, redis_process)
        _prompt(server, "/v2/health/live")
        _prompt(server, "/metrics")

        # Started again from its append-only file: the server reconnects by itself.
        redis_process.start()
        for t in (2, 3):
            rest.append(_rest_output(_retried(partial(_rest_step, server, steps[t], t + 1))))
            over_grpc.append(_retried(partial(_grpc_step, stub, steps[t], t + 1)))
        assert server.process.poll() is None

    expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"]
    np.testing.assert_allclose(np.concatenate(rest, axis=1), expected, atol=ATOL)
    np.testing.assert_allclose(np.concatenate(over_grpc, axis=1), expected, atol=ATOL)
