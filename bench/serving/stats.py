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
