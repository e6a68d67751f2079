"""Small shared records: latency percentiles and process CPU time, read the same way by every part."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU of a whole process (all its threads: ORT's and gRPC's included), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces; every field after its closing ')' is numeric.
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (children, their children, ...), from the parent ids in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending += children.get(current, [])
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (for servers of several processes:
    TorchServe's launcher, Java frontend and Python workers).

    Each process's own CPU plus what its children that already exited and were waited for took
    (cutime, cstime), so a helper process that comes and goes between two readings is counted too.
    """
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # exited between the listing and now; its parent's cutime will hold it
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / _CLOCK_TICKS


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds; NaN-free (zeros) when nothing was measured."""
    if not seconds:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(ms.max()), "mean": float(ms.mean())}


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy (not idle or iowait) since boot, from /proc/stat.

    Read at a window's edges next to the server's and the driver's own CPU, it shows how much of
    the machine something else took meanwhile: on a shared 2-core box that is the noise figure.
    """
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU of a process's main thread alone: for seqserve and the echo server, the event loop.

    Set against the whole process's CPU it says how much went to the other threads (ONNX Runtime's
    compute thread, grpc's poller); a main thread near one core means the event loop is the wall.
    """
    return cpu_seconds(f"{pid}/task/{pid}")
