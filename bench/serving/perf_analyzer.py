"""Triton's perf_analyzer (set up by bench/setup_perf_analyzer.sh) run against a server, and what it measured.

Its printed report is for people; what is read here is its CSV (`-f`, the measurement it reports) and
its profile export (`--profile-export-file`, every request it sent with the times of its answers), so
that a run can be checked request by request: each answered exactly once, and the steps of a sequence
never in flight together.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

# The wrapper the setup script writes: it puts the CUDA runtime library the binary links to on the path.
DEFAULT_EXECUTABLE = Path(__file__).resolve().parents[1] / ".envs" / "perf_analyzer" / "perf_analyzer"
SETUP_HINT = "bash bench/setup_perf_analyzer.sh"


def executable() -> Path | None:
    """perf_analyzer's wrapper ($SEQSERVE_PERF_ANALYZER, else the setup script's), or None if not set up."""
    path = Path(os.environ.get("SEQSERVE_PERF_ANALYZER", DEFAULT_EXECUTABLE))
    return path if path.is_file() and os.access(path, os.X_OK) else None


def version() -> str | None:
    """Its own words for its version, e.g. "2.41.1 (commit b752bdd)"; None if not set up."""
    found = executable()
    if found is None:
        return None
    done = subprocess.run([str(found), "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (done.stdout + done.stderr).strip().removeprefix("Perf Analyzer Version ")


class PerfAnalyzerFailed(RuntimeError):
    """perf_analyzer exited non-zero: a request failed, the load could not be held, or it never stabilized."""


@dataclass
class Measurement:
    """One perf_analyzer run at one concurrency."""

    concurrency: int
    infer_per_s: float  # the reported measurement (the stable windows at the end)
    latency_us: dict[str, float]  # p50/p90/p95/p99 of the reported measurement
    requests: int  # every request sent, warm-up and unstable windows included
    badly_answered: int  # requests answered zero times or more than once
    sequences: int  # distinct sequence ids sent (0 for a stateless model)
    overlapping_steps: int  # a sequence's request sent before its previous one was answered
    measured_s: float  # the time covered by all its measurement windows
    command: list[str]
    output: str


def run(
    model: str,
    url: str,
    work_dir: Path,
    *options: str,
    protocol: str = "http",
    concurrency: int = 1,
    timeout: float = 120.0,
) -> Measurement:
    """Runs perf_analyzer once (one concurrency) with `options` added, e.g. ("--streaming",
    "--sequence-length", "20"); raises PerfAnalyzerFailed with its output when it fails."""
    found = executable()
    if found is None:
        raise FileNotFoundError(f"perf_analyzer is not set up: {SETUP_HINT}")
    work_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{model}-{protocol}-c{concurrency}"
    csv_path, export_path = work_dir / f"{stem}.csv", work_dir / f"{stem}-profile.json"
    for earlier in (csv_path, export_path):  # perf_analyzer refuses to overwrite its profile export
        earlier.unlink(missing_ok=True)
    command = [str(found), "-m", model, "-u", url, "-i", protocol, "--concurrency-range", str(concurrency),
               "-f", str(csv_path), "--profile-export-file", str(export_path), *options]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        # A refused option comes first, before pages of usage; a failed request comes last.
        shown = output if len(output) <= 4000 else f"{output[:1000]}\n[...]\n{output[-3000:]}"
        raise PerfAnalyzerFailed(f"perf_analyzer exited {done.returncode}: {' '.join(command)}\n{shown}")
    row = _reported_row(csv_path)
    requests = _requests(export_path)
    return Measurement(
        concurrency=int(row["Concurrency"]),
        infer_per_s=float(row["Inferences/Second"]),
        latency_us={p: float(row[f"{p} latency"]) for p in ("p50", "p90", "p95", "p99")},
        requests=len(requests),
        badly_answered=sum(len(r["response_timestamps"]) != 1 for r in requests),
        sequences=len({r["sequence_id"] for r in requests if "sequence_id" in r}),
        overlapping_steps=_overlapping_steps(requests),
        measured_s=_measured_seconds(export_path),
        command=command,
        output=output,
    )


def _reported_row(csv_path: Path) -> dict[str, str]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 1:
        raise PerfAnalyzerFailed(f"expected one measurement in {csv_path}, found {len(rows)}")
    return rows[0]


def _requests(export_path: Path) -> list[dict[str, Any]]:
    experiments = json.loads(export_path.read_text())["experiments"]
    return [request for experiment in experiments for request in experiment["requests"]]


def _measured_seconds(export_path: Path) -> float:
    experiments = json.loads(export_path.read_text())["experiments"]
    return sum((e["window_boundaries"][-1] - e["window_boundaries"][0]) / 1e9 for e in experiments)


def _overlapping_steps(requests: list[dict[str, Any]]) -> int:
    """Requests sent while the previous request of their sequence still had no answer."""
    by_sequence: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for request in requests:
        if "sequence_id" in request and request["response_timestamps"]:
            by_sequence[request["sequence_id"]].append((request["timestamp"], request["response_timestamps"][-1]))
    overlapping = 0
    for steps in by_sequence.values():
        steps.sort()
        overlapping += sum(sent < previous_answer for (_, previous_answer), (sent, _) in pairwise(steps))
    return overlapping
