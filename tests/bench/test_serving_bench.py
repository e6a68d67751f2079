"""Smoke tests of the serving benchmark's parts (bench/serving): they run, they count, they parse.

Speed is not asserted here (DESIGN: numbers are measured by the benchmark, not by unit tests); these
only make sure `bench/serving_load.py` still works against the current server: the load generator
streams real steps through seqserve and the echo server, and its readings are parsed right.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.onnx_models import write_lstm_model

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from serving import profile_summary, servers  # noqa: E402


def _drive(target: str, features: int, **extra: str) -> dict[str, object]:
    command = [sys.executable, "-m", "serving.loadgen", "--target", target, "--sessions", "4", "--duration", "0.5",
               "--warmup", "0.2", "--model", "lstm", "--features", str(features)]  # fmt: skip
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", value]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.slow
def test_load_generator_streams_steps_through_seqserve_with_batching(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_lstm_model(store, "lstm", stateful=True)  # x [N, T, 3]
    with servers.seqserve(store, tmp_path, "on", {"batching": "true"}) as server:
        assert server.grpc_target is not None and server.metrics_url is not None
        result = _drive(server.grpc_target, 3, server_pid=str(server.pid), metrics_url=server.metrics_url)
    assert result["errors"] == 0, result["first_error"]
    assert result["steps"] > 0 and result["per_session_steps_min"] > 0
    assert result["server_cpu_s"] is not None and result["server_cpu_s"] > 0
    batches = servers.batch_summary([servers.batch_difference(result["metrics_before"], result["metrics_after"])])
    assert batches is not None and batches["runs"] > 0 and 1 <= batches["mean"] <= 4


@pytest.mark.slow
def test_load_generator_against_the_echo_server(tmp_path: Path) -> None:
    with servers.echo(tmp_path, output="last", width=4) as server:
        assert server.grpc_target is not None
        result = _drive(server.grpc_target, 3)
    assert result["errors"] == 0 and result["steps"] > 0


def test_batch_histogram_difference_counts_the_batches_in_between() -> None:
    def exposition(counts: dict[str, int], total: float, n: int) -> str:
        lines = [f'seqserve_batch_size_bucket{{le="{le}",model="m",version="1"}} {c}' for le, c in counts.items()]
        return "\n".join([*lines, f'seqserve_batch_size_sum{{model="m",version="1"}} {total}',
                          f'seqserve_batch_size_count{{model="m",version="1"}} {n}'])  # fmt: skip

    before = exposition({"1.0": 2, "8.0": 2, "64.0": 2, "+Inf": 2}, 2.0, 2)
    after = exposition({"1.0": 3, "8.0": 5, "64.0": 7, "+Inf": 7}, 2.0 + 1 + 2 * 8 + 2 * 64, 7)
    summary = servers.batch_summary([servers.batch_difference(before, after)])
    assert summary == {"runs": 5, "mean": (1 + 16 + 128) / 5, "buckets": {"<=1": 1, "<=8": 2, "<=64": 2}}


def test_profile_samples_are_charged_to_the_innermost_known_part() -> None:
    loop = "Handle._run (asyncio/events.py:80)"
    assert profile_summary.categorize([loop, "Batcher._run_group (seqserve/batching/batcher.py:1)",
                                       "concatenate (numpy/_core/multiarray.py:1)"]).startswith("batcher")  # fmt: skip
    assert profile_summary.categorize([loop]).startswith("event loop")
    assert profile_summary.categorize([loop, "EpollSelector.select (selectors.py:468)"]) == profile_summary.IDLE
