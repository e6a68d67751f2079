"""Benchmark: seqserve serving many streaming sessions, next to its floors, in one run on one machine.

Builds a Keras 2-layer LSTM 256->512 (random weights), exports it stateful into a temporary store,
then measures, with the same load generator (serving/loadgen.py, a separate grpc.aio process):
  (a) bare ONNX Runtime in process, single-timestep batches with states fed back (the model's floor);
  (b) seqserve with batching off;  (c) seqserve with batching on (defaults; steps not waiting; compute thread);
  (d) an echo server: grpc.aio ModelStreamInfer answering without doing anything (the protocol's floor);
  (e) FastAPI + Keras `predict` with states in a dict, over REST/JSON (what a user writes first);
  (f) TorchServe 0.12 stateful inference (sequence batching) serving the same LSTM stack in PyTorch,
      over its gRPC StreamPredictions2 (the nearest serving peer; needs bench/setup_torchserve_env.sh).
Writes bench/results/serving-cpu.{json,md,png}; every server is stopped at the end.

    .venv/bin/python bench/serving_load.py [--duration 10] [--sessions 1 16 64] [--configs ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from serving import bare_ort, report, servers  # noqa: E402
from serving.stats import latency_summary  # noqa: E402

MODEL_NAME, FEATURES, UNITS = "lstm", 256, 512
MODEL_TEXT = f"Keras LSTM {FEATURES}->{UNITS} x2 (return_sequences), stateful, one timestep per step"

# Server configurations: SEQSERVE_* settings per name (echo, keras-fastapi and torchserve are not seqserve).
SEQSERVE_CONFIGS: dict[str, dict[str, str]] = {
    "off": {"batching": "false"},
    "on": {"batching": "true"},  # the defaults: batches on the event loop, steps wait up to 2 ms for streams
    "on-nowait": {"batching": "true", "sequence_batch_delay": "0"},
    "on-thread": {"batching": "true", "batch_compute": "thread"},
    "on-2t": {"batching": "true", "intra_op_threads": "2"},
    "on-uvloop": {"batching": "true"},
    "on-rest": {"batching": "true"},  # the defaults, driven over KServe V2 REST instead of gRPC
}
# TorchServe configurations: settings of the handler (bench/baselines/torchserve/model-config.yaml) per name.
# `torchserve` keeps PyTorch's defaults; `torchserve-nomkldnn` turns oneDNN off for nn.LSTM, which is
# several times faster for one timestep on this CPU (the baseline's README): the tuned peer.
TORCHSERVE_CONFIGS: dict[str, dict[str, object]] = {"torchserve": {}, "torchserve-nomkldnn": {"mkldnn": False}}
OTHER_CONFIGS = ["echo", "keras-fastapi", *TORCHSERVE_CONFIGS]
# The TorchServe configurations run by default only where their environment was built (default_configs).
DEFAULT_CONFIGS = ["echo", "off", "on", "on-nowait", "on-thread", "on-rest", "keras-fastapi", *TORCHSERVE_CONFIGS]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_model(directory: Path, features: int = FEATURES, units: int = UNITS) -> tuple[Path, Path]:
    """Saves the Keras model (LSTM x2, random weights) and exports it stateful into directory/store;
    returns (keras file, model version directory)."""
    import keras

    from seqserve.export import export_model

    keras.utils.set_random_seed(0)
    x = keras.Input((None, features), name="x")
    hidden = keras.layers.LSTM(units, return_sequences=True)(x)
    hidden = keras.layers.LSTM(units, return_sequences=True)(hidden)
    keras_file = directory / "lstm.keras"
    keras.Model(x, hidden).save(keras_file)
    exported = export_model(keras_file, name=MODEL_NAME, store=directory / "store", stateful=True, progress=False)
    return keras_file, exported.path


def drive(
    server: servers.ServerProcess, sessions: int, args: argparse.Namespace, first_id: int, latencies: Path
) -> dict[str, Any]:
    """One load-generator window against a started server; returns its LoadResult as a dict."""
    if server.rest_url:
        target = ["--protocol", server.rest_protocol, "--target", server.rest_url]
    else:
        assert server.grpc_target is not None
        target = ["--protocol", server.grpc_protocol, "--target", server.grpc_target, "--channels", str(args.channels)]
    window = args.duration / args.rounds
    warmup = max(args.warmup, server.min_warmup)
    command = [sys.executable, "-m", "serving.loadgen", *target, "--sessions", str(sessions),
               "--duration", str(window), "--warmup", str(warmup), "--model", MODEL_NAME,
               "--features", str(FEATURES), "--first-id", str(first_id), "--server-pid", str(server.pid),
               "--latencies-out", str(latencies)]  # fmt: skip
    if server.metrics_url:
        command += ["--metrics-url", server.metrics_url]
    if server.cpu_tree:
        command += ["--server-tree"]
    if server.main_pid:
        command += ["--server-main-pid", str(server.main_pid)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    timeout = warmup + window + 120
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr[-3000:]}\n{server.log_tail()}")
    return dict(json.loads(done.stdout))


def merge(config: str, windows: list[dict[str, Any]], latencies: list[Path]) -> dict[str, Any]:
    """One row per (configuration, N) from its windows: totals, pooled latencies, CPU per 1000 steps."""
    steps = sum(w["steps"] for w in windows)
    seconds = sum(w["seconds"] for w in windows)
    pooled = np.concatenate([np.load(path) for path in latencies])

    def total(key: str) -> float | None:
        values = [w[key] for w in windows]
        return None if any(v is None for v in values) else float(sum(values))

    server_cpu, main_cpu, driver_cpu = total("server_cpu_s"), total("server_main_thread_cpu_s"), total("driver_cpu_s")
    assert driver_cpu is not None
    others = (total("machine_busy_s") or 0.0) - (server_cpu or 0.0) - driver_cpu
    per_1k = 1000 / max(steps, 1)
    return {
        "config": config,
        "label": report.LABELS.get(config, config),
        "protocol": windows[0]["protocol"],
        "sessions": windows[0]["sessions"],
        "steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "steps_per_s_per_window": [w["steps_per_s"] for w in windows],
        "latency_ms": latency_summary(pooled.tolist()),
        "errors": sum(w["errors"] for w in windows),
        "first_error": next((w["first_error"] for w in windows if w["first_error"]), None),
        "per_session_steps_min": min(w["per_session_steps_min"] for w in windows),
        "per_session_steps_max": max(w["per_session_steps_max"] for w in windows),
        "batches": servers.batch_summary(
            [servers.batch_difference(w["metrics_before"], w["metrics_after"]) for w in windows]
        ),
        "server_cpu_per_1k": None if server_cpu is None else server_cpu * per_1k,
        "server_main_thread_cpu_per_1k": None if main_cpu is None else main_cpu * per_1k,
        "driver_cpu_per_1k": driver_cpu * per_1k,
        "server_cores": None if server_cpu is None else server_cpu / seconds,
        "server_main_thread_cores": None if main_cpu is None else main_cpu / seconds,
        "driver_cores": driver_cpu / seconds,
        "others_cores": max(others, 0.0) / seconds,
    }


def _server(config: str, keras_file: Path, store: Path, logs: Path) -> contextlib.AbstractContextManager[Any]:
    if config == "echo":
        return servers.echo(logs, width=UNITS)
    if config == "keras-fastapi":
        return servers.keras_fastapi(keras_file, logs)
    if config in TORCHSERVE_CONFIGS:
        return servers.torchserve(keras_file, logs, config, TORCHSERVE_CONFIGS[config])
    uvloop, rest = config.endswith("uvloop"), config.endswith("rest")
    return servers.seqserve(store, logs, config, SEQSERVE_CONFIGS[config], uvloop=uvloop, rest=rest)


def run_servers(args: argparse.Namespace, keras_file: Path, store: Path, work: Path) -> list[dict[str, Any]]:
    """Every configuration's server started at once, then `rounds` passes over (configuration, N).

    Interleaving short windows instead of measuring each configuration in one block spreads
    whatever else the machine is doing (on a shared box, a lot) evenly over the configurations.
    """
    plan = [(c, n) for c in args.configs for n in (args.keras_sessions if c == "keras-fastapi" else args.sessions)]
    windows: dict[tuple[str, int], list[dict[str, Any]]] = {key: [] for key in plan}
    saved: dict[tuple[str, int], list[Path]] = {key: [] for key in plan}
    first_id = 1
    with contextlib.ExitStack() as stack:
        log(f"starting {len(args.configs)} servers: {', '.join(args.configs)}")
        started = {c: stack.enter_context(_server(c, keras_file, store, work)) for c in args.configs}
        for round_number in range(1, args.rounds + 1):
            for config, n in plan:
                path = work / f"latencies-{config}-{n}-{round_number}.npy"
                w = drive(started[config], n, args, first_id, path)
                first_id += n
                windows[config, n].append(w)
                saved[config, n].append(path)
                lat = w["latency_ms"]
                log(
                    f"  round {round_number}/{args.rounds} {config:<13} N={n:<3} {w['steps_per_s']:>8,.0f} steps/s"
                    f"  p50 {lat['p50']:6.2f}  p99 {lat['p99']:7.2f} ms  server {w['server_cpu_s'] / w['seconds']:.2f}"
                    f" cores (main thread {w['server_main_thread_cpu_s'] / w['seconds']:.2f})"
                    f"  driver {w['driver_cpu_s'] / w['seconds']:.2f}"
                    + (f"  ERRORS {w['errors']}: {w['first_error']}" if w["errors"] else "")
                )
        log("stopping servers")
    return [merge(config, windows[config, n], saved[config, n]) for config, n in plan]


def run_in_process(args: argparse.Namespace, store: Path) -> list[dict[str, Any]]:
    """Bare ORT, the batcher and the data plane interleaved in one process per N (serving/inprocess.py)."""
    rows = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    for n in args.sessions:
        command = [sys.executable, "-m", "serving.inprocess", "--store", str(store), "--sessions", str(n),
                   "--seconds", str(args.inprocess_seconds), "--rounds", str(args.inprocess_rounds),
                   "--features", str(FEATURES)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=True)
        row = json.loads(done.stdout)
        rows.append(row)
        log(
            f"  in process N={n:<3} bare ORT {row['bare']['steps_per_s']:>8,.0f}  batcher "
            f"{row['batcher']['steps_per_s']:>8,.0f} ({row['batcher_vs_bare']:.2f})  data plane "
            f"{row['data_plane']['steps_per_s']:>8,.0f} ({row['data_plane_vs_bare']:.2f}) steps/s  "
            f"converters {row['converters_us_per_step']:.0f} us/step"
        )
    return rows


def add_ratios(rows: list[dict[str, Any]], bare: list[bare_ort.BareResult]) -> None:
    echo = {r["sessions"]: r["steps_per_s"] for r in rows if r["config"] == "echo"}
    bare_by = {(b.batch, b.threads): b.steps_per_s for b in bare}
    for r in rows:
        n = r["sessions"]
        r["vs_echo"] = r["steps_per_s"] / echo[n] if n in echo and r["config"] != "echo" else None
        r["vs_bare"] = r["steps_per_s"] / bare_by[n, "1"] if (n, "1") in bare_by else None
        r["vs_bare_default"] = r["steps_per_s"] / bare_by[n, "default"] if (n, "default") in bare_by else None


def targets(
    rows: list[dict[str, Any]], bare: list[bare_ort.BareResult], in_process: list[dict[str, Any]]
) -> list[report.Target]:
    """The issue's targets (and DESIGN's 'numbers to hold') as pass/fail lines on this run."""
    by = {(r["config"], r["sessions"]): r for r in rows}
    bare_by = {(b.batch, b.threads): b for b in bare}
    many = max(r["sessions"] for r in rows)
    on, off, echo = by.get(("on", many)), by.get(("off", many)), by.get(("echo", many))
    idle = by.get(("on", 1))
    out = []

    def add(name: str, ok: bool | None, measured: str, wanted: str) -> None:
        out.append(report.Target(name, measured, wanted, ok))

    if on and echo:
        ratio = on["steps_per_s"] / echo["steps_per_s"]
        add(f"batching on, {many} sessions, vs echo server", ratio >= 0.5,
            f"{on['steps_per_s']:,.0f} / {echo['steps_per_s']:,.0f} = {ratio:.2f}", ">= 0.50")  # fmt: skip
    if on and off:
        ratio = on["steps_per_s"] / off["steps_per_s"]
        add(f"batching on vs off, {many} sessions", ratio >= 1.5,
            f"{on['steps_per_s']:,.0f} / {off['steps_per_s']:,.0f} = {ratio:.2f}", ">= 1.5")  # fmt: skip
    if on:
        p99 = on["latency_ms"]["p99"]
        add(f"p99 step latency, batching on, {many} sessions", p99 < 25, f"{p99:.1f} ms", "< 25 ms")
    if idle:
        p50 = idle["latency_ms"]["p50"]
        add("idle server, single streamed step p50", p50 < 1, f"{p50:.2f} ms", "< 1 ms")
        one = bare_by.get((1, "1"))
        if one:
            ratio = p50 / one.ms_per_run
            add("DESIGN: idle step vs bare ORT run (batch 1, 1 thread)", ratio <= 2,
                f"{p50:.3f} / {one.ms_per_run:.3f} ms = {ratio:.1f}x", "<= ~2x")  # fmt: skip
    if on and (many, "1") in bare_by:
        ratio = on["steps_per_s"] / bare_by[many, "1"].steps_per_s
        add(f"DESIGN: batching on, {many} sessions, vs bare ORT batch {many} (1 thread)", ratio >= 0.5,
            f"{ratio:.2f}", ">= 0.50")  # fmt: skip
    engine = next((r for r in in_process if r["sessions"] == many), None)
    if engine:
        bare_n = engine["bare"]["steps_per_s"]
        for part, name in (
            ("batcher", "batching engine alone (gather states, run, scatter)"),
            ("data_plane", "data plane in process (engine + validation, sessions, metrics)"),
        ):
            ratio = engine[f"{part}_vs_bare"]
            add(
                f"{name}, {many} sessions, vs bare ORT batch {many} (1 thread), same process, interleaved",
                ratio >= 0.5,
                f"{engine[part]['steps_per_s']:,.0f} / {bare_n:,.0f} = {ratio:.2f}",
                ">= 0.50",
            )
    keras = by.get(("keras-fastapi", many))
    if on and keras:
        ratio = on["steps_per_s"] / keras["steps_per_s"]
        add(f"batching on vs FastAPI + Keras, {many} sessions (implied by the echo target)", ratio >= 25,
            f"{ratio:.0f}x", ">= 25x")  # fmt: skip
    for config, detail in (("torchserve", ""), ("torchserve-nomkldnn", ", oneDNN off")):
        peer = by.get((config, many))
        if on and peer:
            ratio = on["steps_per_s"] / peer["steps_per_s"]
            add(f"batching on vs TorchServe 0.12 stateful (sequence batching{detail}), {many} sessions", ratio >= 2,
                f"{on['steps_per_s']:,.0f} / {peer['steps_per_s']:,.0f} = {ratio:.2f}x", ">= 2x")  # fmt: skip
    return out


def default_configs(torchserve_available: bool) -> list[str]:
    """DEFAULT_CONFIGS, less the TorchServe ones where their environment has not been built."""
    return [c for c in DEFAULT_CONFIGS if c not in TORCHSERVE_CONFIGS or torchserve_available]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per (configuration, N)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of load before each window")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved passes; each window is duration/rounds")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 16, 64], help="concurrent sessions N")
    parser.add_argument("--keras-sessions", type=int, nargs="+", default=[1, 64], help="N for the Keras baseline")
    parser.add_argument("--configs", nargs="+", default=None, choices=[*SEQSERVE_CONFIGS, *OTHER_CONFIGS],
                        help=f"default: {' '.join(DEFAULT_CONFIGS)} (torchserve where bench/.envs/torchserve "
                        "exists)")  # fmt: skip
    parser.add_argument("--channels", type=int, default=1, help="gRPC channels the driver's sessions share")
    parser.add_argument(
        "--inprocess-seconds", type=float, default=6.0,
        help="measured seconds per N and mode in process (bare ORT, batcher, data plane); 0 skips",
    )  # fmt: skip
    parser.add_argument("--inprocess-rounds", type=int, default=3, help="interleaved windows per mode in process")
    parser.add_argument("--bare-seconds", type=float, default=2.0, help="seconds per bare ORT measurement")
    parser.add_argument("--bare-batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    parser.add_argument("--stem", default="serving-cpu", help="results file name stem")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    has_torchserve = servers.torchserve_available()
    if args.configs is None:
        args.configs = default_configs(has_torchserve)
        if not has_torchserve:
            log(f"skipping {', '.join(TORCHSERVE_CONFIGS)}: no environment at {servers.TORCHSERVE_ENV} "
                "(bash bench/setup_torchserve_env.sh)")  # fmt: skip
    elif set(args.configs) & set(TORCHSERVE_CONFIGS) and not has_torchserve:
        parser.error(f"--configs torchserve* need {servers.TORCHSERVE_ENV}: run bash bench/setup_torchserve_env.sh")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="seqserve-bench-") as tmp:
        work = Path(tmp)
        log("building and exporting the model")
        keras_file, model_dir = build_model(work)
        bare = []
        for batch in sorted(set(args.bare_batches) | set(args.sessions)):
            for threads in (1, 0):
                result = bare_ort.measure(model_dir, batch, threads, args.bare_seconds)
                bare.append(result)
                log(f"  bare ORT batch {batch:<3} threads {result.threads:<7} {result.ms_per_run:7.3f} ms  "
                    f"{result.steps_per_s:>8,.0f} steps/s")  # fmt: skip
        in_process = run_in_process(args, model_dir.parent.parent) if args.inprocess_seconds > 0 else []
        rows = run_servers(args, keras_file, model_dir.parent.parent, work)
    add_ratios(rows, bare)
    checks = targets(rows, bare, in_process)
    machine = report.machine()
    if set(args.configs) & set(TORCHSERVE_CONFIGS):
        machine["versions"].update(servers.torchserve_versions())
    results = {
        "started": started,
        "model": MODEL_TEXT,
        "machine": machine,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "others_cores_mean": sum(r["others_cores"] for r in rows) / max(len(rows), 1),
        "bare_ort": [asdict(b) for b in bare],
        "data_plane_in_process": in_process,
        "runs": rows,
        "targets": [asdict(t) for t in checks],
    }
    for t in checks:
        log(f"{'PASS' if t.passed else 'FAIL'}  {t.name}: {t.measured} (wanted {t.wanted})")
    for path in report.write(results, args.out, args.stem):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
