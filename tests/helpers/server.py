"""Starts a real `seqserve serve` process on free ports and waits until it is ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path

    @property
    def http_url(self) -> str:
        """host:port, the form tritonclient.http expects."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_server(
    store: Path,
    *extra_args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    log_dir: Path | None = None,
) -> Iterator[RunningServer]:
    """`seqserve serve` in a child process (a real uvicorn and grpc.aio), stopped with SIGTERM at the end.

    Later `extra_args` win over the defaults given here (argparse keeps the last value of a flag).
    """
    http_port, grpc_port = free_port(), free_port()
    log_path = Path(log_dir or Path(store).parent) / f"server-{http_port}.log"
    command = [
        sys.executable, "-m", "seqserve.cli", "serve", "--store", str(store), "--host", "127.0.0.1",
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--device", "cpu", *extra_args,
    ]  # fmt: skip
    full_env = {**os.environ, "SEQSERVE_STORE_POLL_SECONDS": "0.2", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = RunningServer(process, http_port, grpc_port, log_path)
    try:
        _wait_ready(server, timeout)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"seqserve exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"http://{server.http_url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"seqserve did not become ready in {timeout}s:\n{server.log()}")
