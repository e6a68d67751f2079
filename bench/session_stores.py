"""Benchmark: streams served with their state in memory, in one Redis, and in a 3-primary Redis Cluster.

The serving benchmark's model (Keras LSTM 256->512 x2, stateful) and load (N gRPC ModelStreamInfer
streams of single steps, serving/loadgen.py), against three `seqserve serve` processes that differ
only in `--sessions`: `memory`, a redis-server started here, and a Redis Cluster of three primaries
started here (no replicas: they would only take CPU from this 2-core machine). Windows of the three
are interleaved, so the machine's noise falls on them alike. Issue 12's targets: one Redis >= 0.8x
the memory store's steps/s, the cluster >= 0.7x, each with p99 within 1.5x of the memory store's.

    .venv/bin/python bench/session_stores.py            # ~3 min: N = 16 and 64, 3 rounds
Writes bench/results/session-stores.{json,md,png}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]  # the tests' launchers of real Redis servers

import serving_load  # noqa: E402
from serving import report, servers  # noqa: E402

from helpers.redis_cluster import running_cluster  # noqa: E402
from helpers.redis_server import running_redis  # noqa: E402

STORES = ["memory", "redis", "cluster"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _scrape(url: str | None) -> dict[str, float]:
    """The store's own counters from the server's /metrics: round trips and their time, reloads."""
    import httpx

    values: dict[str, float] = {}
    if not url:
        return values
    for line in httpx.get(url, timeout=5).text.splitlines():
        for name in ("seqserve_session_store_round_trips_total", "seqserve_session_store_seconds_sum",
                     "seqserve_session_store_seconds_count", "seqserve_session_reloads_total",
                     "seqserve_session_conflicts_total", "seqserve_inference_requests_total"):  # fmt: skip
            if line.startswith(name):
                values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per (store, N), all rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--stem", default="session-stores")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    windows: dict[tuple[str, int], list[dict[str, Any]]] = {(s, n): [] for s in STORES for n in args.sessions}
    saved: dict[tuple[str, int], list[Path]] = {key: [] for key in windows}
    store_counters: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="seqserve-stores-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        log("building and exporting the model")
        _, model_dir = serving_load.build_model(work)
        (work / "redis").mkdir()
        redis_url = stack.enter_context(running_redis(work / "redis"))
        cluster = stack.enter_context(running_cluster(work / "cluster", primaries=3, replicas=0))
        log(f"redis-server at {redis_url}; cluster of three primaries at {cluster.url}")
        urls = {"memory": "memory", "redis": redis_url, "cluster": cluster.url}
        started_servers = {
            name: stack.enter_context(
                servers.seqserve(model_dir.parent.parent, work, name, {"batching": "true", "sessions": url})
            )
            for name, url in urls.items()
        }
        first_id = 1
        for round_number in range(1, args.rounds + 1):
            for n in args.sessions:
                for name in STORES:
                    path = work / f"latencies-{name}-{n}-{round_number}.npy"
                    w = serving_load.drive(started_servers[name], n, args, first_id, path)
                    first_id += n
                    windows[name, n].append(w)
                    saved[name, n].append(path)
                    lat = w["latency_ms"]
                    log(f"  round {round_number}/{args.rounds} {name:<8} N={n:<3} {w['steps_per_s']:>8,.0f} steps/s"
                        f"  p50 {lat['p50']:6.2f}  p99 {lat['p99']:7.2f} ms"
                        + (f"  ERRORS {w['errors']}: {w['first_error']}" if w["errors"] else ""))  # fmt: skip
        for name in STORES:
            store_counters[name] = _scrape(started_servers[name].metrics_url)
        rows = [serving_load.merge(name, windows[name, n], saved[name, n]) for name in STORES for n in args.sessions]
    by = {(r["config"], r["sessions"]): r for r in rows}
    checks = []
    many = max(args.sessions)
    memory = by["memory", many]
    for name, floor in (("redis", 0.8), ("cluster", 0.7)):
        row = by[name, many]
        ratio = row["steps_per_s"] / memory["steps_per_s"]
        checks.append(report.Target(f"{name} vs memory store, {many} streams, steps/s", f"{ratio:.2f}",
                                    f">= {floor}", ratio >= floor))  # fmt: skip
        p99 = row["latency_ms"]["p99"] / memory["latency_ms"]["p99"]
        checks.append(report.Target(f"{name} vs memory store, {many} streams, p99", f"{p99:.2f}x", "<= 1.5x",
                                    p99 <= 1.5))  # fmt: skip
    for name in ("redis", "cluster"):
        counters = store_counters[name]
        steps = counters.get("seqserve_inference_requests_total", 0)
        trips = counters.get("seqserve_session_store_round_trips_total", 0)
        each = counters.get("seqserve_session_store_seconds_sum", 0) / max(
            counters.get("seqserve_session_store_seconds_count", 1), 1
        )
        if steps:
            log(f"{name}: {trips / steps:.3f} round trips per step (per shard), {1e3 * each:.2f} ms each, "
                f"{counters.get('seqserve_session_reloads_total', 0):.0f} reloads")  # fmt: skip
    results = {
        "started": started,
        "model": serving_load.MODEL_TEXT,
        "machine": report.machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": rows,
        "store_counters": store_counters,
        "targets": [c.__dict__ for c in checks],
    }
    for c in checks:
        log(f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.measured} (wanted {c.wanted})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    _write_markdown(results, args.out / f"{args.stem}.md")
    _plot(results, args.out / f"{args.stem}.png")
    log(f"wrote {args.out / args.stem}.{{json,md,png}}")
    return 0


def _write_markdown(results: dict[str, Any], path: Path) -> None:
    lines = [f"# Session stores: memory, one Redis, a 3-primary Redis Cluster ({results['started']})", "",
             f"{results['model']}; {results['settings']['duration']} s measured per (store, N), in "
             f"{results['settings']['rounds']} interleaved rounds.", "",
             "Cores: CPU seconds per second of the server process, and of everything else on the machine "
             "but the load generator (the redis-server processes, mostly).", "",
             "| store | streams | steps/s | p50 ms | p99 ms | server cores | other cores |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["runs"]:
        lines.append(f"| {r['config']} | {r['sessions']} | {r['steps_per_s']:,.0f} | {r['latency_ms']['p50']:.2f} | "
                     f"{r['latency_ms']['p99']:.2f} | {r['server_cores'] or float('nan'):.2f} | "
                     f"{r['others_cores']:.2f} |")  # fmt: skip
    lines += ["", "| target | measured | wanted | |", "|---|---|---|---|"]
    lines += [f"| {t['name']} | {t['measured']} | {t['wanted']} | {'PASS' if t['passed'] else 'FAIL'} |"
              for t in results["targets"]]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({r["sessions"] for r in results["runs"]})
    by = {(r["config"], r["sessions"]): r for r in results["runs"]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    width = 0.8 / len(STORES)
    for i, name in enumerate(STORES):
        xs = [c + (i - 1) * width for c in range(len(counts))]
        for ax, value in ((left, lambda r: r["steps_per_s"]), (right, lambda r: r["latency_ms"]["p99"])):
            bars = ax.bar(xs, [value(by[name, n]) for n in counts], width, label=name if ax is left else None)
            ratios = [value(by[name, n]) / value(by["memory", n]) for n in counts]
            ax.bar_label(bars, [f"{r:.2f}x" for r in ratios], fontsize=8)  # of the memory store's
    for ax, title in ((left, "steps/s (label: x the memory store)"), (right, "p99 latency, ms (label: x memory)")):
        ax.set_xticks(range(len(counts)), [f"{n} streams" for n in counts])
        ax.set_title(title, fontsize=10)
    fig.legend(loc="upper center", ncol=len(STORES), bbox_to_anchor=(0.5, 0.93), frameon=False)
    fig.suptitle("seqserve session stores, gRPC streams of single steps (higher left, lower right is better)")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
