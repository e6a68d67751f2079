"""Triton's perf_analyzer and our own load generator against one seqserve, on one model, in one run.

Both drive N concurrent sequences of single timesteps over gRPC `ModelStreamInfer` to the serving
bench's model (Keras LSTM 256->512 x2, stateful, `serving_load.build_model`), served by `seqserve serve`
with its defaults. Rounds alternate the two drivers on the same server, so that a drift of the
machine shows in both. What is compared: steps/s (perf_analyzer's infer/s: one request is one step),
latency, and what each driver and the server spent in CPU per step; on 2 cores a driver's CPU is
taken from the server. Needs perf_analyzer (bash bench/setup_perf_analyzer.sh) and Keras in .venv.

    .venv/bin/python bench/perf_analyzer_vs_load.py                 # ~4 min: N = 1, 16, 64, 2 rounds
    .venv/bin/python bench/perf_analyzer_vs_load.py --sessions 16 --rounds 1 --seconds 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import serving_load  # noqa: E402
from serving import perf_analyzer, report, servers  # noqa: E402
from serving.stats import cpu_seconds  # noqa: E402

# perf_analyzer's sequence ids start here, far from the load generator's (1 + round * 100_000 + ...).
PERF_FIRST_SEQUENCE_ID = 10_000_000
# A difference this small is noise on this shared 2-core VM whatever the rounds say (bench/README.md).
NOISE_FLOOR = 0.10
DRIVERS = ("load_generator", "perf_analyzer")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _successes(server: servers.ServerProcess) -> int:
    """Requests the server answered, from its statistics extension."""
    assert server.metrics_url is not None
    url = server.metrics_url.replace("/metrics", f"/v2/models/{serving_load.MODEL_NAME}/stats")
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(json.load(response)["model_stats"][0]["inference_stats"]["success"]["count"])


def _children_cpu_seconds() -> float:
    """CPU of this process's finished children: a perf_analyzer run's, read around it (it runs alone)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load_generator(
    server: servers.ServerProcess, sessions: int, args: argparse.Namespace, first_id: int, work: Path
) -> dict[str, Any]:
    """One window of bench/serving/loadgen.py: N endless sequences, one step in flight each."""
    window = argparse.Namespace(duration=args.seconds, rounds=1, warmup=args.warmup, channels=1)
    result = serving_load.drive(server, sessions, window, first_id, work / f"load-{first_id}.npy")
    if result["errors"]:
        raise RuntimeError(f"load generator saw {result['errors']} errors: {result['first_error']}")
    return {
        "steps_per_s": result["steps_per_s"],
        "latency_ms": {k: result["latency_ms"][k] for k in ("p50", "p90", "p99")},
        "driver_cpu_ms_per_step": 1e3 * result["driver_cpu_s"] / result["steps"],
        "server_cpu_ms_per_step": 1e3 * result["server_cpu_s"] / result["steps"],
        "seconds": result["seconds"],
    }


def run_perf_analyzer(
    server: servers.ServerProcess, sessions: int, args: argparse.Namespace, first_id: int, work: Path
) -> dict[str, Any]:
    """One perf_analyzer run at concurrency N: N sequences of ~--sequence-length steps, streamed, and
    new sequences as they end. CPU per step is over its whole run (set-up and every window)."""
    assert server.grpc_target is not None
    options = ["--streaming", "--sequence-length", str(args.sequence_length), "--shape", f"x:1,{serving_load.FEATURES}",
               # perf_analyzer 2.41 refuses a range without an end
               "--sequence-id-range", f"{first_id}:{first_id + 1_000_000}",
               "--measurement-interval", str(int(args.seconds * 1000)), "--stability-percentage", str(args.stability),
               "--max-trials", str(args.max_trials)]  # fmt: skip
    driver_before = _children_cpu_seconds()
    server_before, answered_before = cpu_seconds(server.pid), _successes(server)
    measured = perf_analyzer.run(serving_load.MODEL_NAME, server.grpc_target, work, *options, protocol="grpc",
                                 concurrency=sessions, timeout=60 + 2 * args.max_trials * args.seconds)  # fmt: skip
    driver_cpu = _children_cpu_seconds() - driver_before
    server_cpu, answered = cpu_seconds(server.pid) - server_before, _successes(server) - answered_before
    if measured.badly_answered or measured.overlapping_steps:
        raise RuntimeError(f"perf_analyzer run not clean: {measured}")
    return {
        "steps_per_s": measured.infer_per_s,
        "latency_ms": {p: measured.latency_us[p] / 1e3 for p in ("p50", "p90", "p99")},
        "driver_cpu_ms_per_step": 1e3 * driver_cpu / answered,
        "server_cpu_ms_per_step": 1e3 * server_cpu / answered,
        "seconds": measured.measured_s,
        "sequences": measured.sequences,
        "requests": measured.requests,
        # As one would type it in the repository (the temporary folder named $WORK).
        "command": " ".join(measured.command).replace(f"{HERE.parent}/", "").replace(str(work), "$WORK"),
    }


def spread(values: list[float]) -> float:
    """Round-to-round spread of one driver: max / min - 1."""
    return max(values) / min(values) - 1


def summarize(sessions: int, load: list[dict[str, Any]], perf: list[dict[str, Any]]) -> dict[str, Any]:
    """The means of each driver's rounds, their ratio, and whether it is within the rounds' own noise."""
    load_rate = [r["steps_per_s"] for r in load]
    perf_rate = [r["steps_per_s"] for r in perf]
    ratio = statistics.mean(perf_rate) / statistics.mean(load_rate)
    noise = max(spread(load_rate), spread(perf_rate), NOISE_FLOOR)
    return {
        "sessions": sessions,
        "load_generator_steps_per_s": statistics.mean(load_rate),
        "perf_analyzer_steps_per_s": statistics.mean(perf_rate),
        "perf_over_load": ratio,
        "noise": noise,
        "agree": abs(ratio - 1) <= noise,
        "load_generator": load,
        "perf_analyzer": perf,
    }


def _both(row: dict[str, Any], key: str, sub: str | None = None, digits: int = 2) -> str:
    """The mean over its rounds of one figure of each driver, as "load / perf"."""
    means = [statistics.mean(r[key][sub] if sub else r[key] for r in row[driver])
             for driver in DRIVERS]  # fmt: skip
    return f"{means[0]:.{digits}f} / {means[1]:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# perf_analyzer vs our load generator",
        "",
        f"Run {results['started']} on {machine['cpu']} ({machine['cores']} cores), Python {machine['python']}, "
        f"perf_analyzer {results['perf_analyzer_version']}. Model: {serving_load.MODEL_TEXT}; `seqserve serve` with "
        f"its defaults; both drivers over gRPC ModelStreamInfer, {results['settings']['rounds']} alternating rounds "
        f"of {results['settings']['seconds']} s per N. perf_analyzer: sequences of "
        f"{results['settings']['sequence_length']} +/- 20% steps, then new ones; the load generator: endless ones.",
        "",
        "| N | load generator steps/s | perf_analyzer steps/s | perf / load | noise | agree | p50 ms load / perf "
        "| p99 ms load / perf | driver CPU ms/step load / perf | server CPU ms/step load / perf |",
        "|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        rates = [" ".join(f"{r['steps_per_s']:,.0f}" for r in row[driver]) for driver in DRIVERS]
        lines.append(
            f"| {row['sessions']} | {row['load_generator_steps_per_s']:,.0f} ({rates[0]}) "
            f"| {row['perf_analyzer_steps_per_s']:,.0f} ({rates[1]}) | {row['perf_over_load']:.2f} "
            f"| {row['noise']:.0%} | {'yes' if row['agree'] else 'no'} | {_both(row, 'latency_ms', 'p50')} "
            f"| {_both(row, 'latency_ms', 'p99', 1)} | {_both(row, 'driver_cpu_ms_per_step', digits=3)} "
            f"| {_both(row, 'server_cpu_ms_per_step', digits=3)} |"
        )
    lines += [
        "",
        "Steps/s: the mean of the rounds (each round's figure in brackets). Noise: the larger round-to-round "
        f"spread (max/min - 1) of the two drivers, at least {NOISE_FLOOR:.0%}; they agree when perf / load "
        "is within it. perf_analyzer's figure is its reported measurement (the last stable windows); its CPU "
        "per step covers its whole run. A perf_analyzer command of this run:",
        "",
        f"    {results['rows'][-1]['perf_analyzer'][-1]['command']}",
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 16, 64], help="concurrent sequences (N)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the two drivers per N")
    parser.add_argument("--seconds", type=float, default=5.0, help="a measuring window, both drivers")
    parser.add_argument("--warmup", type=float, default=1.0, help="the load generator's warm-up before its window")
    parser.add_argument("--sequence-length", type=int, default=1000, help="perf_analyzer's steps per sequence")
    parser.add_argument("--stability", type=int, default=20, help="perf_analyzer's --stability-percentage")
    parser.add_argument("--max-trials", type=int, default=8, help="perf_analyzer's --max-trials (windows)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--stem", default="perf-analyzer-vs-load")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if perf_analyzer.executable() is None:
        raise SystemExit(f"perf_analyzer is not set up: {perf_analyzer.SETUP_HINT}")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    with tempfile.TemporaryDirectory(prefix="seqserve-perf-") as tmp:
        work = Path(tmp)
        log("building and exporting the model")
        _, model_dir = serving_load.build_model(work)
        with servers.seqserve(model_dir.parent.parent, work, "on", {"batching": "true"}) as server:
            for sessions in args.sessions:
                load, perf = [], []
                for round_ in range(args.rounds):
                    first_id = 1 + round_ * 100_000 + sessions * 1_000
                    load.append(run_load_generator(server, sessions, args, first_id, work))
                    perf.append(run_perf_analyzer(server, sessions, args, PERF_FIRST_SEQUENCE_ID + first_id, work))
                    log(f"N={sessions:<3} round {round_ + 1}: load generator {load[-1]['steps_per_s']:8,.0f} steps/s"
                        f"  perf_analyzer {perf[-1]['steps_per_s']:8,.0f} steps/s")  # fmt: skip
                rows.append(summarize(sessions, load, perf))
    version = perf_analyzer.version()
    results = {
        "started": started,
        "model": serving_load.MODEL_TEXT,
        "machine": report.machine(),
        "perf_analyzer_version": version,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"{args.stem}.json", args.out / f"{args.stem}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(markdown(results))
    for row in rows:
        log(f"N={row['sessions']:<3} perf / load = {row['perf_over_load']:.2f} (noise {row['noise']:.0%}): "
            f"{'agree' if row['agree'] else 'DISAGREE'}")  # fmt: skip
    log(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
