"""Turns one benchmark run into bench/results/serving-<device>.{json,md,png}.

The JSON keeps everything measured; the Markdown is the table people read in review; the PNG is
what they would rather look at: throughput per configuration against the echo server and bare ONNX
Runtime, and the latency percentiles against the targets.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# How each configuration is named in the table and the plot, in the order they are shown.
LABELS = {
    "echo": "echo server (grpc.aio, does nothing)",
    "off": "seqserve, batching off",
    "on": "seqserve, batching on (defaults)",
    "on-nowait": "seqserve, batching on, steps do not wait",
    "on-thread": "seqserve, batching on, compute thread",
    "on-2t": "seqserve, batching on, 2 ORT threads",
    "on-uvloop": "seqserve, batching on, uvloop",
    "on-rest": "seqserve, batching on, KServe V2 REST (binary)",
    "keras-fastapi": "FastAPI + Keras predict (REST/JSON)",
    "torchserve": "TorchServe 0.12 stateful, torch LSTM (batch 64, 5 ms)",
    "torchserve-nomkldnn": "TorchServe 0.12 stateful, torch LSTM, oneDNN off",
}
COLORS = {
    "echo": "#9e9e9e",
    "off": "#ef8a62",
    "on": "#2166ac",
    "on-nowait": "#67a9cf",
    "on-thread": "#762a83",
    "on-2t": "#1b7837",
    "on-uvloop": "#35978f",
    "on-rest": "#4393c3",
    "keras-fastapi": "#b2182b",
    "torchserve": "#e08214",
    "torchserve-nomkldnn": "#fdb863",
}


@dataclass
class Target:
    """One line of the issue's (or DESIGN's) targets, evaluated on this run."""

    name: str
    measured: str
    wanted: str
    passed: bool | None  # None: not measured in this run


def machine() -> dict[str, Any]:
    """CPU model, cores and the versions that shape these numbers."""
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import os

    versions = {}
    for package in ("seqserve", "onnxruntime", "grpcio", "protobuf", "numpy", "keras", "torch", "fastapi", "uvicorn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions,
    }


def write(results: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.json", directory / f"{stem}.md", directory / f"{stem}.png"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n")
    paths[1].write_text(markdown(results, paths[2].name))
    plot(results, paths[2])
    return paths


# -- Markdown --------------------------------------------------------------------------------------


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def markdown(results: dict[str, Any], png_name: str) -> str:
    m, s = results["machine"], results["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [
        f"# Serving benchmark, CPU ({results['started']})",
        "",
        f"Model: {results['model']}. Load: N concurrent sequences, each streaming single timesteps over gRPC "
        f"ModelStreamInfer (send, wait for the answer, send the next), {s['duration']:g} s measured per row, in "
        f"{s['rounds']} windows interleaved with the other configurations, each after {s['warmup']:g} s of "
        "warm-up; the driver is a separate grpc.aio process. The Keras baseline is driven "
        "the same way over REST/JSON (aiohttp), TorchServe over its own gRPC stream (StreamPredictions2, "
        "one stream and sequence id per session).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, Linux {m['kernel']}; {versions}.",
        f"Load from other processes during the run: {results['others_cores_mean']:.2f} cores on average "
        "(machine busy time minus server and driver, per measured window; see `others_cores` per row).",
        "",
        f"![throughput and latency]({png_name})",
        "",
        "## Targets",
        "",
        "| target | measured | wanted | |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        verdict = "n/a" if t["passed"] is None else ("PASS" if t["passed"] else "FAIL")
        lines.append(f"| {t['name']} | {t['measured']} | {t['wanted']} | {verdict} |")
    lines += [
        "",
        "## Servers under load",
        "",
        "Ratios: to the echo server at the same N; to bare ORT at batch N (1 thread, which is seqserve's "
        "default `intra_op_threads`). CPU per step: milliseconds of CPU per answered step, whole process "
        "(main thread, i.e. the event loop, in brackets); for TorchServe the whole process tree (launcher, "
        "Java frontend, Python worker) with the Python worker in brackets. Cores: CPU seconds per second "
        "during the window. "
        "Others: cores taken by other processes on the machine meanwhile (noise). Steps/s per window: "
        "the interleaved windows that were pooled into the row.",
        "",
        "| configuration | N | steps/s | per window | p50 ms | p90 ms | p99 ms | vs echo | vs bare ORT "
        "| batches formed (mean; sizes) | server CPU ms/step (main) | server cores (main) | driver CPU ms/step "
        "| others, cores | errors |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["runs"]:
        lat = r["latency_ms"]
        batches = r.get("batches")
        formed = (
            "—"
            if not batches
            else f"{batches['mean']:.1f}; " + ", ".join(f"{k}: {v}" for k, v in batches["buckets"].items())
        )
        windows = " / ".join(f"{x:,.0f}" for x in r["steps_per_s_per_window"])
        if r["server_cpu_per_1k"] is None:
            cpu = cores = "—"
        else:
            cpu = f"{r['server_cpu_per_1k']:.3f} ({r['server_main_thread_cpu_per_1k']:.3f})"
            cores = f"{r['server_cores']:.2f} ({r['server_main_thread_cores']:.2f})"
        lines.append(
            f"| {r['label']} | {r['sessions']} | {r['steps_per_s']:,.0f} | {windows} | "
            f"{lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | {_ratio(r['vs_echo'])} | "
            f"{_ratio(r['vs_bare'])} | {formed} | {cpu} | {cores} | {r['driver_cpu_per_1k']:.3f} | "
            f"{r['others_cores']:.2f} | {r['errors']} |"
        )
    if results.get("data_plane_in_process"):
        lines += [
            "",
            "## In process, no gRPC: bare ORT, the batching engine, the data plane",
            "",
            "One process per N (serving/inprocess.py), its three loads in interleaved windows on one loaded model: "
            "bare ORT at batch N (states fed back); the batcher alone (N sessions step through `Batcher.run`: "
            "gather states, one ORT run, scatter, each session packing its new states); `DataPlane.infer` called "
            "by N sessions (the batcher plus validation, session turns and store, metrics). Converters: decoding "
            "one step's ModelInferRequest and encoding its response, timed alone.",
            "",
            "| N | load | steps/s | per window | vs bare | p50 ms | p99 ms | CPU ms/step |",
            "|---:|---|---:|---|---:|---:|---:|---:|",
        ]
        for d in results["data_plane_in_process"]:
            for mode, label in (("bare", "bare ORT"), ("batcher", "batcher"), ("data_plane", "data plane")):
                m = d[mode]
                ratio = "—" if mode == "bare" else f"{d[f'{mode}_vs_bare']:.2f}"
                latency = "— | —" if mode == "bare" else f"{m['latency_ms']['p50']:.2f} | {m['latency_ms']['p99']:.2f}"
                windows = " / ".join(f"{x:,.0f}" for x in m["steps_per_s_per_window"])
                lines.append(
                    f"| {d['sessions']} | {label} | {m['steps_per_s']:,.0f} | {windows} | {ratio} | {latency} | "
                    f"{m['cpu_ms_per_step']:.3f} |"
                )
        converters = ", ".join(f"{d['converters_us_per_step']:.0f}" for d in results["data_plane_in_process"])
        lines += ["", f"Converters, us per step (one reading per N): {converters}."]
    lines += [
        "",
        "## Bare ONNX Runtime (in process, single timestep, states fed back)",
        "",
        "| batch | threads | ms per run | steps/s |",
        "|---:|---|---:|---:|",
    ]
    for b in results["bare_ort"]:
        lines.append(f"| {b['batch']} | {b['threads']} | {b['ms_per_run']:.3f} | {b['steps_per_s']:,.0f} |")
    lines.append("")
    return "\n".join(lines)


# -- the plot --------------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    """Top: throughput bars per configuration and N, with the echo / bare-ORT / in-process lines.
    Bottom: latency percentiles per configuration, one panel per N, against the targets."""
    runs = results["runs"]
    configs = [c for c in LABELS if any(r["config"] == c for r in runs)]
    counts = sorted({r["sessions"] for r in runs})
    by = {(r["config"], r["sessions"]): r for r in runs}
    fig = plt.figure(figsize=(15, 10))
    grid = fig.add_gridspec(2, len(counts), height_ratios=[1.25, 1])
    _throughput(fig.add_subplot(grid[0, :]), results, configs, counts, by)
    for i, n in enumerate(counts):
        _latency(fig.add_subplot(grid[1, i]), configs, n, by)
    machine_line = f"{results['machine']['cpu']}, {results['machine']['cores']} cores"
    fig.suptitle(
        f"seqserve CPU serving benchmark, {results['started']}\n{results['model']}; {machine_line}; "
        f"other processes took {results['others_cores_mean']:.2f} cores on average",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _throughput(ax: Any, results: dict[str, Any], configs: list[str], counts: list[int], by: dict[Any, Any]) -> None:
    bare = {(b["batch"], b["threads"]): b["steps_per_s"] for b in results["bare_ort"]}
    in_process = results.get("data_plane_in_process", [])
    engine = {d["sessions"]: d["batcher"]["steps_per_s"] for d in in_process}
    data_plane = {d["sessions"]: d["data_plane"]["steps_per_s"] for d in in_process}
    bar_configs = [c for c in configs if c != "echo"]
    width = 0.8 / max(len(bar_configs), 1)
    for j, config in enumerate(bar_configs):
        present = [(i, n) for i, n in enumerate(counts) if (config, n) in by]
        xs = [i + (j - (len(bar_configs) - 1) / 2) * width for i, _ in present]
        ys = [by[config, n]["steps_per_s"] for _, n in present]
        bars = ax.bar(xs, ys, width, color=COLORS.get(config), label=LABELS.get(config, config))
        ax.bar_label(bars, [f"{y:,.0f}" for y in ys], fontsize=8, padding=2)
    for i, n in enumerate(counts):
        lines = [
            (by.get(("echo", n), {}).get("steps_per_s"), "k", "-", "echo server (protocol floor)"),
            (bare.get((n, "1")), "#7b3294", "--", "bare ORT, batch N, 1 thread"),
            (bare.get((n, "default")), "#7b3294", ":", "bare ORT, batch N, default threads"),
            (engine.get(n), "#bf812d", "-.", "seqserve batching engine in process (no gRPC)"),
            (data_plane.get(n), "#8c510a", "-.", "seqserve data plane in process (no gRPC)"),
        ]
        for value, color, style, label in lines:
            if value:
                ax.hlines(value, i - 0.45, i + 0.45, colors=color, linestyles=style, linewidth=2,
                          label=label if i == 0 else None)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xticks(range(len(counts)), [f"N = {n} sessions" for n in counts])
    ax.set_ylabel("steps/s (log scale)")
    ax.set_title("Throughput: single-timestep steps answered per second, N concurrent streaming sessions")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    ax.grid(axis="y", alpha=0.3, which="both")


def _latency(ax: Any, configs: list[str], n: int, by: dict[Any, Any]) -> None:
    present = [c for c in configs if (c, n) in by]
    percentiles = ("p50", "p90", "p99")
    w = 0.8 / len(percentiles)
    for k, pct in enumerate(percentiles):
        ys = [by[c, n]["latency_ms"][pct] for c in present]
        ax.bar([i + (k - 1) * w for i in range(len(present))], ys, w, alpha=0.4 + 0.3 * k,
               color=[COLORS.get(c) for c in present])  # fmt: skip
    ax.axhline(25, color="red", linestyle="--", linewidth=1, label="p99 target (64 sessions) 25 ms")
    if n == 1:
        ax.axhline(1, color="orange", linestyle="--", linewidth=1, label="idle p50 target 1 ms")
    ax.set_yscale("log")
    ax.set_xticks(range(len(present)), present, rotation=25, fontsize=8)
    ax.set_title(f"Step latency, N = {n}: p50 / p90 / p99 (light to dark)", fontsize=9)
    ax.set_ylabel("ms (log scale)")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
