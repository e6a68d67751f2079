"""The servers under test, each a child process on loopback, started ready and always stopped.

A server runs in its own process so that its CPU time can be read from /proc apart from the load
generator's, and so that no state (ORT threads, event loops, imports) leaks between configurations.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    grpc_target: str | None
    metrics_url: str | None
    rest_url: str | None
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _grpc_ready(target: str) -> bool:
    import grpc

    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=1)
            return True
        except grpc.FutureTimeoutError:
            return False


@contextlib.contextmanager
def _running(
    name: str, command: list[str], env: dict[str, str], log_dir: Path, ready: Callable[[], bool], **where: str | None
) -> Iterator[ServerProcess]:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
    server = ServerProcess(name, process, where.get("grpc_target"), where.get("metrics_url"),
                           where.get("rest_url"), log_path)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} was not ready in 120 s:\n{server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def seqserve(
    store: Path, log_dir: Path, name: str, settings: dict[str, str], uvloop: bool = False
) -> contextlib.AbstractContextManager[ServerProcess]:
    """`seqserve serve` on the store with SEQSERVE_* `settings` (e.g. {"batching": "false"}), optionally on uvloop."""
    http_port, grpc_port = free_port(), free_port()
    launcher = "serving.seqserve_uvloop" if uvloop else "seqserve.cli"
    command = [sys.executable, "-m", launcher, "serve", "--store", str(store), "--host", "127.0.0.1",
               "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--device", "cpu",
               "--log-level", "warning"]  # fmt: skip
    env = {**_bench_path(), **{f"SEQSERVE_{key.upper()}": value for key, value in settings.items()}}
    env.setdefault("SEQSERVE_STORE_POLL_SECONDS", "0")
    base = f"http://127.0.0.1:{http_port}"
    return _running(name, command, env, log_dir, lambda: _http_ok(f"{base}/v2/health/ready"),
                    grpc_target=f"127.0.0.1:{grpc_port}", metrics_url=f"{base}/metrics")  # fmt: skip


def echo(log_dir: Path, output: str = "lstm_1", width: int = 512) -> contextlib.AbstractContextManager[ServerProcess]:
    """The do-nothing ModelStreamInfer server (serving.echo_server)."""
    port = free_port()
    command = [sys.executable, "-m", "serving.echo_server", "--port", str(port), "--output", output,
               "--width", str(width)]  # fmt: skip
    target = f"127.0.0.1:{port}"
    return _running("echo", command, _bench_path(), log_dir, lambda: _grpc_ready(target), grpc_target=target)


def keras_fastapi(model_path: Path, log_dir: Path) -> contextlib.AbstractContextManager[ServerProcess]:
    """The FastAPI + Keras `predict` service a user would write (baselines/keras_fastapi.py)."""
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "baselines" / "keras_fastapi.py"), "--model", str(model_path),
               "--port", str(port)]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    env = {"KERAS_BACKEND": "torch"}
    return _running("keras-fastapi", command, env, log_dir, lambda: _http_ok(f"{base}/health"),
                    rest_url=f"{base}/step")  # fmt: skip


def _bench_path() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")]))}


# -- /metrics ------------------------------------------------------------------------------------

_BUCKET = re.compile(r'^seqserve_batch_size_bucket\{[^}]*le="([^"]+)"[^}]*\} ([0-9.e+]+)$')
_TOTAL = re.compile(r"^seqserve_batch_size_(sum|count)\{[^}]*\} ([0-9.e+]+)$")


def batch_histogram(exposition: str | None) -> dict[str, float]:
    """The seqserve_batch_size histogram as {"<le>": cumulative count, ..., "sum": s, "count": n}."""
    found: dict[str, float] = {}
    for line in (exposition or "").splitlines():
        if match := _BUCKET.match(line) or _TOTAL.match(line):
            found[match.group(1)] = found.get(match.group(1), 0.0) + float(match.group(2))
    return found


def batch_difference(before: str | None, after: str | None) -> dict[str, float]:
    """The histogram's growth between two scrapes: the batches formed in between."""
    start, end = batch_histogram(before), batch_histogram(after)
    return {key: value - start.get(key, 0.0) for key, value in end.items()}


def batch_summary(differences: list[dict[str, float]]) -> dict[str, object] | None:
    """Batches formed over several windows: how many, mean size, and how many fell in each size bucket."""
    total: dict[str, float] = {}
    for difference in differences:
        for key, value in difference.items():
            total[key] = total.get(key, 0.0) + value
    runs = total.get("count", 0.0)
    if runs <= 0:
        return None
    buckets, previous = {}, 0.0
    for le in sorted((k for k in total if k not in ("sum", "count")), key=float):
        if total[le] - previous > 0:
            buckets[f"<={float(le):g}"] = int(total[le] - previous)
        previous = total[le]
    return {"runs": int(runs), "mean": total.get("sum", 0.0) / runs, "buckets": buckets}
