"""The servers under test, each a child process on loopback, started ready and always stopped.

A server runs in its own process so that its CPU time can be read from /proc apart from the load
generator's, and so that no state (ORT threads, event loops, imports) leaks between configurations.
"""

from __future__ import annotations

import contextlib
import json
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
from importlib import metadata
from pathlib import Path

from serving.stats import process_tree

BENCH_DIR = Path(__file__).resolve().parent.parent
TORCHSERVE_ENV = BENCH_DIR / ".envs" / "torchserve"
TORCHSERVE_BASELINE = BENCH_DIR / "baselines" / "torchserve"


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
    # The load generator's --protocol over grpc_target: KServe's "grpc" or "torchserve".
    grpc_protocol: str = "grpc"
    # ... over rest_url: the FastAPI baseline's "rest" or KServe V2's "v2rest".
    rest_protocol: str = "rest"
    # Servers of several processes (TorchServe): CPU summed over the process tree; `main_pid`, if
    # set, is the process reported as the server's main part instead of the main thread.
    cpu_tree: bool = False
    main_pid: int | None = None
    # Seconds of load before a measuring window, at least (slow or JIT-compiled servers need longer).
    min_warmup: float = 0.0

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
    name: str,
    command: list[str],
    env: dict[str, str],
    log_dir: Path,
    ready: Callable[[], bool],
    cwd: Path | None = None,
    tree: bool = False,
    **where: str | None,
) -> Iterator[ServerProcess]:
    """Starts `command`, waits for `ready()`, yields, then stops it: SIGTERM, and SIGKILL after 10 s.
    With `tree`, its children are sent SIGTERM first (a launcher does not pass the signal on), and
    whatever of its process tree is left after 10 s more is killed."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=cwd)
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
        # For TorchServe: its launcher's child is the Java frontend, whose shutdown stops the workers.
        pids = [p for p in process_tree(process.pid) if p != process.pid] if tree else []
        children = [p for p in pids if _parent(p) == process.pid]
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        _wait_gone(children, timeout=10)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _wait_gone(pids, timeout=10)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, parent, ...); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _parent(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited, its parent has yet to wait


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Waits for processes that are not our children to exit; SIGKILLs those still there at the end."""
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def seqserve(
    store: Path, log_dir: Path, name: str, settings: dict[str, str], uvloop: bool = False, rest: bool = False
) -> contextlib.AbstractContextManager[ServerProcess]:
    """`seqserve serve` on the store with SEQSERVE_* `settings` (e.g. {"batching": "false"}), optionally on
    uvloop; driven over gRPC, or with `rest` over KServe V2 REST."""
    http_port, grpc_port = free_port(), free_port()
    launcher = "serving.seqserve_uvloop" if uvloop else "seqserve.cli"
    command = [sys.executable, "-m", launcher, "serve", "--store", str(store), "--host", "127.0.0.1",
               "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--device", "cpu",
               "--log-level", "warning"]  # fmt: skip
    env = {**_bench_path(), **{f"SEQSERVE_{key.upper()}": value for key, value in settings.items()}}
    env.setdefault("SEQSERVE_STORE_POLL_SECONDS", "0")
    base = f"http://127.0.0.1:{http_port}"
    where = {"rest_url": f"{base}/v2/models/lstm/infer"} if rest else {"grpc_target": f"127.0.0.1:{grpc_port}"}
    running = _running(name, command, env, log_dir, lambda: _http_ok(f"{base}/v2/health/ready"),
                       metrics_url=f"{base}/metrics", **where)  # fmt: skip
    return _with(running, rest_protocol="v2rest")


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
    return _with(
        _running("keras-fastapi", command, env, log_dir, lambda: _http_ok(f"{base}/health"), rest_url=f"{base}/step"),
        min_warmup=2.0,  # Keras answers 64 sessions in ~0.5 s a step: its first round of steps needs longer
    )


@contextlib.contextmanager
def _with(running: contextlib.AbstractContextManager[ServerProcess], **fields: object) -> Iterator[ServerProcess]:
    """`running`, its ServerProcess given `fields` once it is ready."""
    with running as server:
        for key, value in fields.items():
            setattr(server, key, value)
        yield server


# -- TorchServe (bench/baselines/torchserve/, in its own environment) ----------------------------------


def torchserve_available() -> bool:
    """Whether bench/setup_torchserve_env.sh has built the TorchServe environment."""
    return all((TORCHSERVE_ENV / "bin" / tool).exists() for tool in ("torchserve", "torch-model-archiver"))


def torchserve_versions() -> dict[str, str | None]:
    """Versions of the TorchServe environment's packages and of the Java runtime its frontend runs on."""
    found: dict[str, str | None] = {}
    for site in TORCHSERVE_ENV.glob("lib/python*/site-packages"):
        for package in ("torchserve", "torch-model-archiver", "torch"):
            dist = next(iter(metadata.distributions(name=package, path=[str(site)])), None)
            found[f"torchserve env {package}"] = dist.version if dist else None
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30, check=False)
        found["java"] = (java.stderr or java.stdout).splitlines()[0] if java.returncode == 0 else None
    except OSError:
        found["java"] = None
    return found


def _torchserve_model(keras_file: Path, work: Path, log: Path, handler: dict[str, object]) -> Path:
    """The baseline's model archive, built into `work`/model-store: weights copied from the Keras
    model (checked against Keras predict), packed with torch-model-archiver, with model-config.yaml's
    `handler:` settings updated by `handler`. Returns the store."""
    import yaml

    baseline, store = TORCHSERVE_BASELINE, work / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    weights, model_config = work / "lstm.pt", work / "model-config.yaml"
    settings = yaml.safe_load((baseline / "model-config.yaml").read_text())
    settings["handler"] = {**settings.get("handler", {}), **handler}
    model_config.write_text(yaml.safe_dump(settings, sort_keys=False))
    steps = [
        # seqserve's environment: it has keras (on torch) to read the .keras file.
        [sys.executable, str(baseline / "build_model.py"), "--keras", str(keras_file), "--out", str(weights)],
        [str(TORCHSERVE_ENV / "bin" / "torch-model-archiver"), "--model-name", "lstm", "--version", "1.0",
         "--model-file", str(baseline / "lstm_model.py"), "--serialized-file", str(weights),
         "--handler", str(baseline / "lstm_handler.py"), "--config-file", str(model_config),
         "--export-path", str(store), "--force"],
    ]  # fmt: skip
    with open(log, "ab") as out:
        for command in steps:
            out.write(f"$ {' '.join(command)}\n".encode())
            out.flush()
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False,
                                  env={**os.environ, "KERAS_BACKEND": "torch"})  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"building the TorchServe model failed ({done.returncode}); see {log}")
    return store


def _torchserve_worker(management: str) -> int | None:
    """The pid of the model's worker once it is READY (TorchServe's describe-model answer), else None."""
    try:
        with urllib.request.urlopen(f"{management}/models/lstm", timeout=1) as response:
            workers = json.loads(response.read())[0].get("workers", [])
    except (OSError, ValueError, IndexError):
        return None
    ready = [w for w in workers if w.get("status") == "READY"]
    return int(ready[0]["pid"]) if ready else None


@contextlib.contextmanager
def torchserve(
    keras_file: Path, log_dir: Path, name: str = "torchserve", handler: dict[str, object] | None = None
) -> Iterator[ServerProcess]:
    """TorchServe 0.12 stateful inference (sequence batching) serving the Keras model's LSTM stack in
    PyTorch (bench/baselines/torchserve/), driven over its gRPC StreamPredictions2. `handler` overrides
    settings of model-config.yaml's `handler:` section (e.g. {"mkldnn": False}).

    `torchserve --start --foreground` is a Python launcher that runs the Java frontend, which runs the
    Python worker: the CPU is summed over that process tree; the worker is the "main" part reported.
    Everything it writes (archive, config, logs, pid file, worker socket) stays under log_dir/<name>.
    """
    if not torchserve_available():
        raise RuntimeError(f"no TorchServe environment at {TORCHSERVE_ENV}: run bash bench/setup_torchserve_env.sh")
    work = log_dir / name
    work.mkdir(parents=True, exist_ok=True)
    store = _torchserve_model(keras_file, work, log_dir / f"{name}-build.log", handler or {})
    http, management, metrics, grpc_port, grpc_management = (free_port() for _ in range(5))
    config = work / "config.properties"
    config.write_text(
        "\n".join([
            f"inference_address=http://127.0.0.1:{http}",
            f"management_address=http://127.0.0.1:{management}",
            f"metrics_address=http://127.0.0.1:{metrics}",
            "grpc_inference_address=127.0.0.1",
            f"grpc_inference_port={grpc_port}",
            "grpc_management_address=127.0.0.1",
            f"grpc_management_port={grpc_management}",
            "disable_token_authorization=true",
            # The once-a-minute system metrics collector is a separate Python process: not serving.
            "disable_system_metrics=true",
            "install_py_dep_per_model=false",
            "vmargs=-Xmx1g -XX:+ExitOnOutOfMemoryError",
        ]) + "\n"
    )  # fmt: skip
    command = [str(TORCHSERVE_ENV / "bin" / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
               "--model-store", str(store), "--models", "lstm=lstm.mar", "--ts-config", str(config)]  # fmt: skip
    env = {
        # TorchServe's pid file (TMPDIR), the JVM's temp dir and the worker's Unix socket (TEMP), and
        # its logs (LOG_LOCATION, METRICS_LOCATION) in this run's directory, not in /tmp or the cwd.
        "TMPDIR": str(work), "TEMP": str(work), "LOG_LOCATION": str(work / "logs"),
        "METRICS_LOCATION": str(work / "logs"),
        # One torch thread in the worker, as seqserve's one ORT intra-op thread (the handler sets it too).
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }  # fmt: skip
    base = f"http://127.0.0.1:{management}"
    running = _running(name, command, env, log_dir, lambda: _torchserve_worker(base) is not None, cwd=work,
                       tree=True, grpc_target=f"127.0.0.1:{grpc_port}")  # fmt: skip
    with running as server:
        server.grpc_protocol, server.cpu_tree, server.main_pid = "torchserve", True, _torchserve_worker(base)
        server.min_warmup = 2.0  # the JVM compiles the frontend's hot paths in the first seconds of load
        yield server


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
