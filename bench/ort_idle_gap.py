"""What a pause between steps does to ONNX Runtime's next step: the idle-latency question, measured.

An idle server answers one streamed step in ~1-1.7 ms on this VM although bare ORT runs the same
step in ~0.3 ms back to back (bench/README.md). This times the serving benchmark's model (LSTM
256->512 x2, 14.7 MB of weights; batch 1, one timestep, 1 intra-op thread, states fed back) with a
gap before every run, of two kinds:

- `sleep`: the thread blocks (`time.sleep`), so its core may go idle, as a server's event loop does
  between one client's steps;
- `spin`: the thread busy-waits for as long, keeping its core (what `allow_spinning` does for ORT's
  own worker threads).

Only the runs are timed, never the gaps. Kinds and lengths are interleaved in rounds, so that the
host's drift falls on all of them alike.

    .venv/bin/python bench/ort_idle_gap.py [--gaps-ms 0 0.1 0.3 1 3] [--runs 300] [--rounds 4]

Writes bench/results/ort-idle-gap.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("KERAS_BACKEND", "torch")

from serving import report  # noqa: E402
from serving_load import FEATURES, UNITS, build_model  # noqa: E402

KINDS = ("sleep", "spin")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Step:
    """One single-timestep run of the exported model at `batch`, states fed back, as seqserve's runtime runs it."""

    def __init__(self, model_dir: Path, batch: int) -> None:
        from seqserve.runtime.providers import resolve_providers
        from seqserve.runtime.session import OrtModel, session_options
        from seqserve.store.signature import Signature

        signature = Signature.read(model_dir)
        self.model = OrtModel(
            model_dir / "model.onnx", signature, resolve_providers("cpu"), session_options(1, 1, False)
        )
        features = signature.inputs[0].shape[-1]
        x = np.random.default_rng(0).standard_normal((batch, 1, features), dtype=np.float32)
        self.feeds = {signature.inputs[0].name: x, **self.model.zero_states(batch)}
        self.states = [(s.input, s.output) for s in signature.states]

    def __call__(self) -> float:
        """Seconds this run took."""
        began = time.perf_counter()
        outputs = self.model.run(self.feeds)
        took = time.perf_counter() - began
        for name, output in self.states:
            self.feeds[name] = outputs[output]
        return took


def pause(kind: str, seconds: float) -> None:
    if seconds <= 0:
        return
    if kind == "sleep":
        time.sleep(seconds)
        return
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def measure(step: Step, gaps: list[float], runs: int, rounds: int) -> dict[tuple[str, float], list[float]]:
    """Run times (s) per (kind, gap); a zero gap is one 'back to back' series, kept under 'spin'."""
    plan = [("spin", 0.0)] + [(kind, gap) for gap in gaps if gap > 0 for kind in KINDS]
    times: dict[tuple[str, float], list[float]] = {key: [] for key in plan}
    for _ in range(20):  # first-run allocations stay out
        step()
    for round_number in range(1, rounds + 1):
        for kind, gap in plan:
            step()  # the first run after switching kinds belongs to neither series
            for _ in range(runs // rounds):
                pause(kind, gap)
                times[kind, gap].append(step())
        log(f"  round {round_number}/{rounds} done")
    return times


def summarize(times: dict[tuple[str, float], list[float]]) -> list[dict[str, Any]]:
    rows = []
    for (kind, gap), values in times.items():
        ms = np.asarray(values) * 1e3
        p10, p50, p90 = np.percentile(ms, [10, 50, 90])
        rows.append({"kind": "back to back" if gap == 0 else kind, "gap_ms": gap * 1e3, "runs": len(values),
                     "p10_ms": float(p10), "p50_ms": float(p50), "p90_ms": float(p90)})  # fmt: skip
    base = next(r["p50_ms"] for r in rows if r["gap_ms"] == 0)
    for r in rows:
        r["vs_back_to_back"] = r["p50_ms"] / base
    return rows


def write_markdown(results: dict[str, Any], path: Path) -> None:
    machine = results["machine"]
    lines = [
        "# ONNX Runtime run time after a pause (bench/ort_idle_gap.py)",
        "",
        f"Run {results['started']} on {machine['cpu']}, {machine['cores']} cores. {results['model']}; batch "
        f"{results['settings']['batch']}, 1 intra-op thread. Only the runs are timed; gap kinds and lengths are "
        "interleaved in rounds.",
        "",
        "![ORT run time after a pause](ort-idle-gap.png)",
        "",
        "| pause before each run | gap ms | runs | p10 ms | p50 ms | p90 ms | p50 vs back to back |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(f"| {r['kind']} | {r['gap_ms']:g} | {r['runs']} | {r['p10_ms']:.3f} | {r['p50_ms']:.3f} | "
                     f"{r['p90_ms']:.3f} | {r['vs_back_to_back']:.2f}x |")  # fmt: skip
    lines.append("")
    path.write_text("\n".join(lines))


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    rows = results["rows"]
    base = next(r for r in rows if r["gap_ms"] == 0)
    ax.axhline(base["p50_ms"], color="k", linestyle="--", linewidth=1, label="back to back (p50)")
    for kind, color, marker in (("sleep", "#d7301f", "o"), ("spin", "#2b8cbe", "s")):
        series = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["gap_ms"])
        gaps = [r["gap_ms"] for r in series]
        p50 = np.array([r["p50_ms"] for r in series])
        spread = [p50 - [r["p10_ms"] for r in series], [r["p90_ms"] for r in series] - p50]
        ax.errorbar(gaps, p50, yerr=spread, color=color, marker=marker, capsize=3,
                    label=f"{kind} before each run (p50, p10-p90)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("pause before each run, ms (log scale)")
    ax.set_ylabel("ORT run time, ms")
    ax.set_ylim(bottom=0)
    ax.set_title(f"ORT run of one step (batch {results['settings']['batch']}) after a pause\n"
                 f"{results['model']}; {results['started']}", fontsize=10)  # fmt: skip
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gaps-ms", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0])
    parser.add_argument("--runs", type=int, default=400, help="timed runs per (kind, gap), over all rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--features", type=int, default=FEATURES, help="model input width (the serving model's)")
    parser.add_argument("--units", type=int, default=UNITS, help="LSTM units per layer (the serving model's)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="seqserve-gap-") as tmp:
        log("building and exporting the model")
        _, model_dir = build_model(Path(tmp), features=args.features, units=args.units)
        step = Step(model_dir, args.batch)
        log(f"timing runs after pauses of {', '.join(f'{g:g}' for g in args.gaps_ms)} ms, sleeping and spinning")
        times = measure(step, [g / 1e3 for g in args.gaps_ms], args.runs, args.rounds)
    results = {
        "started": started,
        "model": f"Keras LSTM {args.features}->{args.units} x2, stateful, one timestep per run",
        "machine": report.machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": summarize(times),
    }
    for r in results["rows"]:
        log(f"  {r['kind']:<12} {r['gap_ms']:>5g} ms  p50 {r['p50_ms']:.3f} ms  ({r['vs_back_to_back']:.2f}x)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ort-idle-gap.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, args.out / "ort-idle-gap.md")
    plot(results, args.out / "ort-idle-gap.png")
    log(f"wrote {args.out}/ort-idle-gap.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
