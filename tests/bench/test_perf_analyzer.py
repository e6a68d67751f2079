"""Triton's real perf_analyzer runs against a real `seqserve serve` with zero errors (issue 14).

perf_analyzer first reads the model's configuration (Triton's model configuration extension), then
loads the model: a stateless model over HTTP and gRPC, a stateful one as sequences over a gRPC stream.
Every request it sent is checked in its profile export (answered exactly once, a sequence's steps
never in flight together), and the server's statistics must have moved by those requests, none failed.
Skipped where perf_analyzer is not set up (`bash bench/setup_perf_analyzer.sh`).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers.server import RunningServer, running_server

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import perf_analyzer_vs_load  # noqa: E402
from serving import perf_analyzer  # noqa: E402

needs_perf_analyzer = pytest.mark.skipif(
    perf_analyzer.executable() is None, reason=f"perf_analyzer is not set up ({perf_analyzer.SETUP_HINT})"
)

# Short windows, loose stability: this checks that perf_analyzer works against seqserve, not speed.
WINDOWS = ("--measurement-interval", "300", "--stability-percentage", "100")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    store = tmp_path_factory.mktemp("perf_analyzer") / "store"
    for name in ("sentiment", "sensor"):  # the example store's stateless and smallest stateful model
        shutil.copytree(ROOT / "model_store" / name, store / name)
    with running_server(store) as running:
        yield running


@pytest.fixture
def token_data(tmp_path: Path) -> Path:
    """perf_analyzer's random INT64 data are not token ids: give it a padded sentence the vocabulary has."""
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"data": [{"tokens": {"content": [0, 0, 3, 7, 12, 5, 9, 1], "shape": [8]}}]}))
    return path


def _statistics(server: RunningServer, model: str) -> tuple[int, int]:
    """(success, fail) request counts of the model's statistics extension."""
    stats = httpx.get(f"http://{server.http_url}/v2/models/{model}/stats").json()["model_stats"][0]
    return stats["inference_stats"]["success"]["count"], stats["inference_stats"]["fail"]["count"]


def _active_sessions(server: RunningServer) -> float:
    metrics = httpx.get(f"http://{server.http_url}/metrics").text
    found = re.search(r"^seqserve_sessions_active (\S+)$", metrics, re.MULTILINE)
    assert found, "seqserve_sessions_active is missing from /metrics"
    return float(found.group(1))


def _assert_clean_run(
    server: RunningServer, model: str, before: tuple[int, int], measured: perf_analyzer.Measurement
) -> None:
    success, fail = _statistics(server, model)
    assert fail == before[1], f"{fail - before[1]} requests failed:\n{measured.output}"
    assert measured.requests > 0 and measured.infer_per_s > 0, measured.output
    assert measured.badly_answered == 0, measured.output
    # The export lists the requests of its windows; a few may be sent around them, never fewer.
    assert success - before[0] >= measured.requests


@pytest.mark.slow
@needs_perf_analyzer
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_loads_a_stateless_model_without_errors(
    server: RunningServer, token_data: Path, tmp_path: Path, protocol: str
) -> None:
    url = server.http_url if protocol == "http" else server.grpc_url
    before = _statistics(server, "sentiment")
    measured = perf_analyzer.run(
        "sentiment", url, tmp_path, "--input-data", str(token_data), *WINDOWS, protocol=protocol, concurrency=2
    )
    _assert_clean_run(server, "sentiment", before, measured)
    assert measured.sequences == 0


@pytest.mark.slow
@needs_perf_analyzer
def test_perf_analyzer_streams_concurrent_sequences_to_a_stateful_model(server: RunningServer, tmp_path: Path) -> None:
    before = _statistics(server, "sensor")
    measured = perf_analyzer.run(
        "sensor", server.grpc_url, tmp_path, "--streaming", "--sequence-length", "10", "--shape", "reading:1,1",
        *WINDOWS, protocol="grpc", concurrency=4,
    )  # fmt: skip
    _assert_clean_run(server, "sensor", before, measured)
    # Many whole sequences, each started and ended: none is left open on the server.
    assert measured.sequences > 4 and measured.overlapping_steps == 0
    assert _active_sessions(server) == 0


@pytest.mark.slow
@needs_perf_analyzer
def test_a_step_the_server_refuses_fails_the_perf_analyzer_run(server: RunningServer, tmp_path: Path) -> None:
    """The checks above would see errors: a refused streamed step ends the run non-zero, the reason shown."""
    before = _statistics(server, "sensor")
    with pytest.raises(perf_analyzer.PerfAnalyzerFailed, match=r"input 'reading' has shape \[1, 1, 2\]"):
        perf_analyzer.run(
            "sensor", server.grpc_url, tmp_path, "--streaming", "--shape", "reading:1,2", *WINDOWS,
            protocol="grpc", concurrency=2,
        )  # fmt: skip
    assert _statistics(server, "sensor")[1] > before[1]


def test_the_bench_calls_the_drivers_in_agreement_only_within_their_own_noise() -> None:
    def rounds(*rates: float) -> list[dict[str, float]]:
        return [{"steps_per_s": rate} for rate in rates]

    close = perf_analyzer_vs_load.summarize(16, rounds(1000, 1100), rounds(1080, 1120))
    assert close["perf_over_load"] == pytest.approx(1100 / 1050) and close["noise"] == pytest.approx(0.10)
    assert close["agree"]
    apart = perf_analyzer_vs_load.summarize(16, rounds(1000, 1020), rounds(1300, 1310))
    assert not apart["agree"]
    noisy = perf_analyzer_vs_load.summarize(16, rounds(1000, 1500), rounds(1300, 1310))  # 50% apart: noise
    assert noisy["agree"] and noisy["noise"] == pytest.approx(0.5)
