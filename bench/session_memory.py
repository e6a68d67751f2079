"""What an idle session costs in memory: its state bytes, and the bookkeeping around them.

DESIGN.md asks for "state bytes plus < 1 KiB of bookkeeping; 100k idle sessions fit in memory
bounds you can state". This builds a stateful Keras LSTM, exports it, and starts sessions through
the real data plane (sequence_start with one timestep, batching on, the in-memory store), then
measures with tracemalloc (Python objects and NumPy buffers alike) what the sessions hold once
they are idle, at several counts. Bookkeeping per session = (traced bytes - state bytes) / sessions,
where state bytes are the store's own count (`MemoryStateStore.bytes_used`).

    .venv/bin/python bench/session_memory.py [--sessions 10000 50000 100000] [--units 64]

Writes bench/results/session-memory.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("KERAS_BACKEND", "torch")

from serving import report  # noqa: E402
from serving_load import build_model  # noqa: E402

FEATURES = 8


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_store(directory: Path, units: int) -> Path:
    """The serving benchmark's stateful two-layer LSTM (states: h and c of each layer), exported into a store."""
    _, model_dir = build_model(directory, features=FEATURES, units=units)
    return model_dir.parent.parent


async def measure(store: Path, counts: list[int], concurrency: int) -> list[dict[str, Any]]:
    from seqserve.config import Settings
    from seqserve.inference import InferRequest, Tensor
    from seqserve.server import build_dataplane

    settings = Settings(store=store, device="cpu", store_poll_seconds=0, max_sessions=max(counts) + 1)
    plane = build_dataplane(settings)
    x = np.random.default_rng(0).standard_normal((1, 1, FEATURES), dtype=np.float32)

    async def start(sequence_id: int) -> None:
        request = InferRequest("lstm", inputs=[Tensor("x", "FP32", x)], parameters={
            "sequence_id": sequence_id, "sequence_start": True})  # fmt: skip
        await plane.infer(request)

    await start(10**9)  # the first request builds the batcher and warms ORT up: not a session's cost
    await plane.sessions.store.delete("lstm/u:1000000000")
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rows, made = [], 0
    for count in sorted(counts):
        began = time.perf_counter()
        while made < count:
            batch = range(made + 1, min(count, made + concurrency) + 1)
            await asyncio.gather(*(start(i) for i in batch))
            made = batch[-1]
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - base
        state_bytes = plane.sessions.store.bytes_used  # type: ignore[attr-defined]
        row = {
            "sessions": count,
            "state_bytes": state_bytes,
            "state_bytes_per_session": state_bytes / count,
            "traced_bytes": traced,
            "bookkeeping_bytes_per_session": (traced - state_bytes) / count,
            "seconds_to_start": time.perf_counter() - began,
        }
        rows.append(row)
        log(f"  {count:>7,} sessions: {traced / 2**20:8.1f} MiB traced, state {state_bytes / count:,.0f} B "
            f"+ bookkeeping {row['bookkeeping_bytes_per_session']:,.0f} B per session")  # fmt: skip
    tracemalloc.stop()
    await plane.close()
    return rows


def write_markdown(results: dict[str, Any], path: Path) -> None:
    machine = results["machine"]
    lines = [
        f"# Session memory ({results['started']})",
        "",
        f"Model: {results['model']}. Sessions started through the data plane (sequence_start, one "
        "timestep, batching on, in-memory store), then idle; measured with tracemalloc after a full "
        "garbage collection. Bookkeeping = traced bytes minus the store's state bytes, per session.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}.",
        "",
        "![session memory](session-memory.png)",
        "",
        "| sessions | traced MiB | state B/session | bookkeeping B/session | seconds to start them |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['sessions']:,} | {r['traced_bytes'] / 2**20:,.1f} | {r['state_bytes_per_session']:,.0f} "
            f"| {r['bookkeeping_bytes_per_session']:,.0f} | {r['seconds_to_start']:.1f} |"
        )
    lines += ["", f"DESIGN.md: bookkeeping < 1 KiB per session: **{results['verdict']}**.", ""]
    path.write_text("\n".join(lines))


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    counts = [r["sessions"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.stackplot(
        counts,
        [r["state_bytes_per_session"] for r in rows],
        [r["bookkeeping_bytes_per_session"] for r in rows],
        labels=["state (h, c of each layer)", "bookkeeping (record, keys, store, array headers)"],
        colors=["#2166ac", "#ef8a62"],
    )
    ax.axhline(rows[0]["state_bytes_per_session"] + 1024, color="red", linestyle="--", linewidth=1,
               label="state + 1 KiB (DESIGN.md bound)")  # fmt: skip
    ax.set_xlabel("idle sessions")
    ax.set_ylabel("bytes per session")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Memory per idle session — {results['model']}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[10_000, 25_000, 50_000, 100_000])
    parser.add_argument("--units", type=int, default=64, help="LSTM units per layer (state: 4 x units floats)")
    parser.add_argument("--concurrency", type=int, default=64, help="sessions started at once")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="seqserve-memory-") as tmp:
        log("building and exporting the model")
        store = build_store(Path(tmp), args.units)
        log(f"starting sessions, {args.concurrency} at a time")
        rows = asyncio.run(measure(store, args.sessions, args.concurrency))
    worst = max(r["bookkeeping_bytes_per_session"] for r in rows)
    results = {
        "started": started,
        "model": f"Keras LSTM {FEATURES}->{args.units} x2, stateful",
        "machine": report.machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
        "verdict": f"{'PASS' if worst < 1024 else 'FAIL'} (worst {worst:,.0f} B)",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "session-memory.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, args.out / "session-memory.md")
    plot(results, args.out / "session-memory.png")
    log(f"bookkeeping < 1 KiB per session: {results['verdict']}")
    log(f"wrote {args.out}/session-memory.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
