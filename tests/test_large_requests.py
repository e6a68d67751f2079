"""One maximal valid request does not hold the server: liveness keeps answering while it is decoded,
run and answered (a line of issue 13's "Done when": within 100 ms, measured against a real server).

The request is as large as the default limits allow: a 61 MiB JSON body (or 64 MiB of binary
tensor data) of 160 (167) sequences of 100,000 timesteps, the default max_timesteps_per_request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from helpers.onnx_models import write_lstm_model
from helpers.server import RunningServer, running_server

TIMESTEPS = 100_000
LIVENESS_BOUND = 0.1  # seconds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    root = tmp_path_factory.mktemp("large")
    write_lstm_model(root, "lstm", 1, features=1, units=4)
    with running_server(root) as running:
        yield running


def _json_body(batch: int) -> tuple[bytes, dict[str, str]]:
    values = ",".join(["0.5"] * (batch * TIMESTEPS))
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [batch, TIMESTEPS, 1], "data": []}]})
    body = head.replace('"data": []', f'"data": [{values}]')
    body = body[:-1] + ', "outputs": [{"name": "last"}]}'
    return body.encode(), {"content-type": "application/json"}


def _binary_body(batch: int, output: str = "last") -> tuple[bytes, dict[str, str]]:
    data = np.full((batch, TIMESTEPS, 1), 0.5, np.float32).tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [batch, TIMESTEPS, 1],
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "outputs": [{"name": output, "parameters": {"binary_data": False}}],
        }
    ).encode()
    return head + data, {"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))}


def _resident_mib(server: RunningServer) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# The big request is sent by another process, so that the probes measure the server, not this
# process's GIL shared with a thread uploading 64 MiB.
_SENDER = """
import sys, httpx
url, path, out = sys.argv[1:4]
headers = dict(h.split(": ", 1) for h in sys.argv[4:])
response = httpx.post(url, content=open(path, "rb").read(), headers=headers, timeout=120)
open(out, "wb").write(str(response.status_code).encode() + b"\\n" + response.content)
"""


_FORMS = {
    "json": lambda batch: _json_body(batch),
    "binary": lambda batch: _binary_body(batch),
    # A small request with a large answer: 4 million values of `sequence`, 75 MiB of JSON.
    "json answer": lambda batch: _binary_body(batch, "sequence"),
}


@pytest.mark.parametrize(("form", "batch"), [("json", 160), ("binary", 167), ("json answer", 10)])
def test_liveness_answers_within_100ms_while_a_maximal_request_runs(
    server: RunningServer, form: str, batch: int, tmp_path: Path
) -> None:
    body, headers = _FORMS[form](batch)
    assert len(body) <= 64 * 1024 * 1024  # the default max_request_bytes
    (tmp_path / "body").write_bytes(body)
    del body
    before = _resident_mib(server)
    url = f"http://{server.http_url}/v2/models/lstm/infer"
    command = [sys.executable, "-c", _SENDER, url, str(tmp_path / "body"), str(tmp_path / "answer")]
    latencies: list[float] = []
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=10) as client:
        client.get("/v2/health/live")  # the probe's connection is open before the big request starts
        sender = subprocess.Popen(command + [f"{k}: {v}" for k, v in headers.items()])
        while sender.poll() is None:
            started = time.perf_counter()
            assert client.get("/v2/health/live").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    status, _, content = (tmp_path / "answer").read_bytes().partition(b"\n")
    assert status == b"200", content[:500]
    answer = json.loads(content)["outputs"][0]
    shape = [batch, TIMESTEPS, 4] if form == "json answer" else [batch, 4]
    assert answer["shape"] == shape and len(answer["data"]) == np.prod(shape) and np.isfinite(answer["data"]).all()
    after = _resident_mib(server)
    ms = sorted(1000 * t for t in latencies)
    print(f"{form}: {(tmp_path / 'body').stat().st_size / 2**20:.1f} MiB body, {len(ms)} probes, median "
          f"{ms[len(ms) // 2]:.1f} ms, worst {ms[-3:]} ms, resident {before:.0f} -> {after:.0f} MiB")  # fmt: skip
    assert len(ms) > 3 and ms[-1] < 1000 * LIVENESS_BOUND, ms[-5:]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2, 1], "data": [' + b"1.5," * 400_000, "JSON"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 400001, 1], "data": ['
            + b"1.5," * 400_000
            + b'"a"]}]}',
            "input 'x'",
        ),
    ],
    ids=["malformed", "a string among floats"],
)
def test_a_large_bad_json_body_gets_its_400_from_the_worker_process(
    server: RunningServer, body: bytes, error: str
) -> None:
    assert len(body) > 1 << 20  # decoded in a worker process
    response = httpx.post(f"http://{server.http_url}/v2/models/lstm/infer", content=body, timeout=60)
    assert response.status_code == 400 and error in response.json()["error"], response.text[:300]
