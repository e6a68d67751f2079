"""The soak (bench/soak.py) for 30 s against a real server: no unexpected answer, and every kind of
churn really happened (created, ended, expired, evicted). The 10-minute run's memory figure is
measured by hand (bench/README.md); here RSS is only held to a loose bound, 30 s being short.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import soak  # noqa: E402

from seqserve.grpc.generated import grpc_service_pb2 as pb  # noqa: E402


@pytest.mark.slow
def test_thirty_seconds_of_churn_has_no_unexpected_answer_and_every_kind_of_churn(tmp_path: Path) -> None:
    soak.main(["--seconds", "30", "--out", str(tmp_path), "--progress-every", "10"])
    results = json.loads((tmp_path / "soak.json").read_text())

    assert results["unexpected"] == {}, results["unexpected_examples"]
    assert results["server_log_errors"] == []
    churn, refusals = results["churn"], results["refusals"]
    assert results["steps"] > 1000
    assert churn["created (sequence_start)"] > 0 and churn["created (session API)"] > 0
    assert churn["ended (sequence_end)"] > 0 and churn["ended (EndSession)"] > 0
    for kind in ("404 ended", "404 expired", "404 evicted", "429 full (new session)"):
        assert refusals.get(kind, 0) > 0, kind
    server = results["server_after_drain"]  # the server's own counts agree that both happened
    assert server["seqserve_session_evictions_total"] > 0 and server["seqserve_session_expiries_total"] > 0
    assert server["seqserve_sessions_active"] == 0  # every session expired once the load stopped
    rss = results["rss"]
    assert rss["drift"] is not None and abs(rss["drift"]) < 0.5  # loose: a leak of every session would show
    assert (tmp_path / "soak.md").read_text().startswith("# Soak")
    assert (tmp_path / "soak.png").stat().st_size > 0


def test_the_sequence_id_is_appended_to_a_request_serialized_without_it() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.parameters["sequence_start"].bool_param = True
    for sequence_id in (7, "5f3a"):
        merged = pb.ModelInferRequest.FromString(request.SerializeToString() + soak.sequence_id_bytes(sequence_id))
        assert merged.model_name == "m" and merged.parameters["sequence_start"].bool_param
        parameter = merged.parameters["sequence_id"]
        assert (parameter.int64_param if isinstance(sequence_id, int) else parameter.string_param) == sequence_id


def test_a_gone_session_is_classified_by_the_reason_the_server_gives() -> None:
    tail = "(a new sequence must be sent with sequence_start=true)"
    assert soak.gone_reason(f"sequence 4 of model 'm' has ended {tail}") == "ended"
    assert soak.gone_reason(f"sequence 4 of model 'm' expired after 3 s idle {tail}") == "expired"
    assert soak.gone_reason(f"sequence 4 of model 'm' was evicted to make room for newer sessions {tail}") == "evicted"
    assert soak.gone_reason(f"sequence 4 of model 'm' is unknown {tail}") == "unknown"


def test_memory_drift_compares_the_quarters_after_warm_up() -> None:
    # 100 s: warm-up is the first 20 s (ignored, however high); then 80 samples, quarters of 20.
    timeline = [{"t": float(t), "rss_mib": 500.0 if t < 20 else 100.0 + (10.0 if t >= 80 else 0.0)} for t in range(101)]
    drift = soak.rss_drift(timeline, 100.0)
    assert drift["first_quarter_median_mib"] == 100.0 and drift["last_quarter_median_mib"] == 110.0
    assert drift["drift"] == pytest.approx(0.10)
    assert soak.rss_drift(timeline[:3], 100.0)["drift"] is None
