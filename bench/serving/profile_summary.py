"""Where a server's time goes: a py-spy `--format raw --threads` profile folded into a few categories.

Each sample is charged to the innermost frame that belongs to a known part (ONNX Runtime, the
batcher, the gRPC converters, grpc.aio, the data plane, the session store, metrics); asyncio and
threading frames are looked through, so a queue operation inside the batcher counts as batching,
and a sample with nothing but event-loop frames counts as the event loop itself.

    py-spy record --pid PID --duration 8 --rate 250 --format raw --threads --nonblocking -o prof.raw
    python -m serving.profile_summary prof.raw
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# (category, substring of a frame's "function (file:line)" text), first match from the leaf wins.
CATEGORIES: list[tuple[str, str]] = [
    ("ONNX Runtime run", "onnxruntime"),
    ("ONNX Runtime run", "OrtModel.run"),
    ("thread hand-off (executor queue, loop wake-up)", "concurrent/futures"),
    ("thread hand-off (executor queue, loop wake-up)", "_write_to_self"),
    ("batcher (collect, concat, scatter)", "seqserve/batching/"),
    ("gRPC <-> records (converters, tensors)", "seqserve/grpc/converters.py"),
    ("gRPC <-> records (converters, tensors)", "seqserve/grpc/tensors.py"),
    ("metrics (prometheus_client)", "prometheus_client"),
    ("metrics (prometheus_client)", "seqserve/metrics.py"),
    ("session store and lock", "seqserve/sessions/"),
    ("data plane (validation, routing)", "seqserve/dataplane.py"),
    ("grpc.aio (servicer, interceptor, stream)", "seqserve/grpc/"),
    ("grpc.aio (servicer, interceptor, stream)", "grpc/"),
    ("grpc.aio (servicer, interceptor, stream)", "ModelStreamInfer"),
    ("REST (uvicorn, FastAPI)", "uvicorn"),
    ("REST (uvicorn, FastAPI)", "starlette"),
]
_LOOK_THROUGH = ("asyncio/", "threading.py", "selectors.py", "<frozen runpy>", "seqserve/cli.py",
                 "seqserve/server.py", "runpy")  # fmt: skip
# Frames of a program's start (`python -m ...`, main(), asyncio.run) that every stack of the main thread has.
_ENTRY_POINTS = ("<module> ", "main ", "serve ", "_run_module_as_main ", "_run_code ", "run ", "_serve ")
# Innermost frames that mean "waiting, not working": py-spy's idle detection misses these waits in C.
_IDLE_LEAVES = ("select (selectors.py", "_worker (concurrent/futures/thread.py")
IDLE = "idle (waiting in epoll or for work)"
_LINE = re.compile(r"^(?:thread \((\w+)\): ([^;]*);)?(.*) (\d+)$")


def categorize(frames: list[str]) -> str:
    """The category of the innermost frame that has one; frames of no category (numpy, protobuf) are
    charged to their caller, so `np.concatenate` inside the batcher counts as batching."""
    if frames and any(frames[-1].split(".", 1)[-1].startswith(leaf) or frames[-1].startswith(leaf)
                      for leaf in _IDLE_LEAVES):  # fmt: skip
        return IDLE
    seen_code = False
    for frame in reversed(frames):
        if any(part in frame for part in _LOOK_THROUGH):
            continue
        for name, needle in CATEGORIES:
            if needle in frame:
                return name
        seen_code = seen_code or not frame.startswith(_ENTRY_POINTS)
    return "other Python" if seen_code else "event loop (asyncio, grpc callbacks in C)"


def summarize(path: Path) -> tuple[Counter[str], Counter[tuple[str, str]], Counter[str]]:
    """Samples per thread, per (thread, category), and per innermost frame of the busiest thread."""
    threads: Counter[str] = Counter()
    by_category: Counter[tuple[str, str]] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        thread = match.group(2) or match.group(1) or "?"
        frames = [f for f in match.group(3).split(";") if f]
        count = int(match.group(4))
        threads[thread] += count
        by_category[thread, categorize(frames)] += count
        if frames:
            leaves[f"{thread}: {frames[-1]}"] += count
    return threads, by_category, leaves


def report(threads: Counter[str], by_category: Counter[tuple[str, str]], leaves: Counter[str]) -> list[str]:
    """The summary as text lines: per thread, the categories' shares of its busy samples; then the top frames."""
    total = sum(threads.values())
    lines = [f"{total} py-spy samples"]
    for thread, n in threads.most_common():
        busy = n - by_category[thread, IDLE]
        lines.append(f"\nthread {thread}: {n} samples, {busy} busy; shares of its busy samples:")
        for (t, category), m in by_category.most_common():
            if t == thread and category != IDLE and busy:
                lines.append(f"  {100 * m / busy:5.1f}%  {category}")
    lines.append("\ninnermost frames, top 25 (share of all samples):")
    for leaf, n in leaves.most_common(25):
        lines.append(f"  {100 * n / total:5.1f}%  {leaf}")
    return lines


def main(argv: list[str] | None = None) -> int:
    path = Path((argv or sys.argv[1:])[0])
    print("\n".join(report(*summarize(path))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
