"""Where a server's time goes under load: py-spy samples of seqserve (or the echo server), summarized.

Starts one configuration of bench/serving_load.py on the same exported model, puts the same load on
it (N streaming sessions from a separate grpc.aio process), samples the server with py-spy in
non-blocking mode (the process is not paused, so the load is undisturbed) and folds the stacks into
categories per thread (serving/profile_summary.py). It also reads each thread's CPU from /proc, which
py-spy cannot tell apart from waiting. Needs py-spy: `.venv/bin/pip install py-spy`.

    .venv/bin/python bench/serving_profile.py [--config on] [--sessions 64] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import serving_load  # noqa: E402
from serving import profile_summary, report, servers  # noqa: E402


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of a process."""
    from serving.stats import cpu_seconds

    return {int(t): cpu_seconds(f"{pid}/task/{t}") for t in os.listdir(f"/proc/{pid}/task")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="on", choices=["echo", *serving_load.SEQSERVE_CONFIGS])
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds sampled")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="seqserve-profile-") as tmp:
        work = Path(tmp)
        serving_load.log("building and exporting the model")
        keras_file, model_dir = serving_load.build_model(work)
        store = model_dir.parent.parent
        if args.config == "echo":
            server_cm = servers.echo(work, width=serving_load.UNITS)
        else:
            settings = serving_load.SEQSERVE_CONFIGS[args.config]
            uvloop, rest = args.config.endswith("uvloop"), args.config.endswith("rest")
            server_cm = servers.seqserve(store, work, args.config, settings, uvloop=uvloop, rest=rest)
        with server_cm as server:
            load_args = argparse.Namespace(channels=1, duration=args.seconds + 4, rounds=1, warmup=1.0)
            raw_path = work / "profile.raw"
            serving_load.log(f"{args.config}: {args.sessions} sessions, sampling {args.seconds:g} s with py-spy")
            result: dict[str, Any] = {}
            driver = threading.Thread(
                target=lambda: result.update(serving_load.drive(server, args.sessions, load_args, 1, work / "l.npy"))
            )
            driver.start()
            time.sleep(3)  # driver start-up and warm-up
            before = thread_cpu(server.pid)
            subprocess.run(
                [py_spy, "record", "--pid", str(server.pid), "--duration", str(int(args.seconds)), "--rate",
                 str(args.rate), "--format", "raw", "--threads", "--nonblocking", "-o", str(raw_path)],
                check=True, capture_output=True,
            )  # fmt: skip
            after = thread_cpu(server.pid)
            driver.join()
            threads, by_category, leaves = profile_summary.summarize(raw_path)
    lines = [
        f"# py-spy profile: {report.LABELS.get(args.config, args.config)}, "
        f"{args.sessions} sessions, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"load: {result['steps_per_s']:,.0f} steps/s, p50 {result['latency_ms']['p50']:.2f} ms, "
        f"p99 {result['latency_ms']['p99']:.2f} ms",
        "",
        "CPU per thread while sampled (/proc; cores = CPU seconds per second):",
    ]
    for tid, seconds in sorted(after.items(), key=lambda kv: kv[1] - before.get(kv[0], 0.0), reverse=True):
        used = seconds - before.get(tid, 0.0)
        if used > 0:
            name = "main thread (event loop)" if tid == server.pid else f"thread {tid}"
            lines.append(f"  {name:<28} {used / args.seconds:.2f} cores")
    lines += ["", *profile_summary.report(threads, by_category, leaves)]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"serving-cpu-profile-{args.config}-{args.sessions}.txt"
    path.write_text(text)
    serving_load.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
