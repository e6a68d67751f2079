"""The error table over REST: each bad request gets its status and a message naming the problem,
and the server keeps serving afterwards."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from helpers.server import RunningServer, running_server

# Small enough that an oversize body is cheap to send, large enough for every good request here.
MAX_REQUEST_BYTES = 64 * 1024

X = [0.5, -0.25, 1.0]  # one sample, one timestep, three features


@dataclass
class Case:
    """One row of the error table: what is sent, and what must come back."""

    id: str
    status: int
    says: str
    body: bytes = b""
    path: str = "/v2/models/lstm/infer"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)


def infer_json(
    outputs: list[dict[str, Any]] | None = None, parameters: dict[str, Any] | None = None, **tensor: Any
) -> bytes:
    """A JSON request for the LSTM; keyword arguments replace fields of its one input tensor."""
    body: dict[str, Any] = {
        "id": "bad-request-42",
        "inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": X, **tensor}],
    }
    if outputs is not None:
        body["outputs"] = outputs
    if parameters is not None:
        body["parameters"] = parameters
    return json.dumps(body).encode()


def binary_case(id: str, says: str, raw: bytes, size: int | None = None, header_length: bool = True) -> Case:
    """A request with the LSTM input as binary data, declaring `size` bytes (default: what is sent)."""
    declared = len(raw) if size is None else size
    tensor = {"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "parameters": {"binary_data_size": declared}}
    header = json.dumps({"inputs": [tensor]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))} if header_length else {}
    return Case(id, 400, says, header + raw if header_length else header, headers=headers)


def with_header_length(value: str) -> dict[str, str]:
    return {"Inference-Header-Content-Length": value}


GOOD_BINARY = np.array(X, dtype="<f4").tobytes()
NAN_BINARY = np.array([0, math.nan, 0], dtype="<f4").tobytes()
OVERSIZE = infer_json(data=[0.0] * MAX_REQUEST_BYTES)
TOKENS_AS_FLOATS = json.dumps(
    {"inputs": [{"name": "tokens", "shape": [1, 2], "datatype": "INT64", "data": [1.5, 2]}]}
).encode()

CASES = [
    # Which model
    Case("unknown-model", 404, "unknown model 'nope'", infer_json(), path="/v2/models/nope/infer"),
    Case("unknown-version", 404, "no version 7", infer_json(), path="/v2/models/lstm/versions/7/infer"),
    Case("version-not-a-number", 404, "version 'latest'", infer_json(), path="/v2/models/lstm/versions/latest/infer"),
    Case("metadata-of-unknown-model", 404, "unknown model 'nope'", path="/v2/models/nope", method="GET"),
    Case("ready-of-unknown-model", 404, "unknown model 'nope'", path="/v2/models/nope/ready", method="GET"),
    # Tensors that do not match the signature
    Case("wrong-input-name", 400, "unknown input 'y'", infer_json(name="y")),
    Case("wrong-datatype", 400, "datatype FP64, expected FP32", infer_json(datatype="FP64")),
    Case("unknown-datatype", 400, "input 'x': unknown datatype 'FLOAT'", infer_json(datatype="FLOAT")),
    Case("wrong-shape", 400, "shape [1, 3], expected [-1 (any), -1 (any), 3]", infer_json(shape=[1, 3])),
    Case("negative-dimension", 400, "must not be negative", infer_json(shape=[1, -1, 3])),
    Case("missing-input", 400, "expects input(s) 'x'", b'{"inputs": []}'),
    Case("no-data", 400, "input 'x' has no data", infer_json(data=None)),
    Case("unknown-output", 400, "unknown output 'hidden'", infer_json(outputs=[{"name": "hidden"}])),
    # JSON data that does not fit
    Case("json-value-count", 400, "has 3 values in 'data', expected 6", infer_json(shape=[1, 2, 3])),
    Case("ragged-nested-data", 400, "not a rectangular list", infer_json(data=[[0.5, 1.0], [1.0]])),
    Case("strings-for-fp32", 400, "strings in 'data'", infer_json(data=["0.5", "1", "2"])),
    Case("floats-for-int64", 400, "floats in 'data', which do not fit datatype INT64", TOKENS_AS_FLOATS,
         path="/v2/models/embed/infer"),
    Case("infinity-in-json", 400, "NaN or infinite", infer_json(data=[0.5, 1e39, 0.0])),
    binary_case("nan-in-binary", "NaN or infinite value at index [0, 0, 1]", NAN_BINARY),
    # Binary data whose sizes do not add up
    binary_case("binary-byte-count", "input 'x' has 8 bytes of binary data, expected 12", GOOD_BINARY[:8]),
    binary_case("binary-extra-bytes", "16 binary bytes follow the JSON header, but the inputs' binary_data_size "
                "add up to 12", GOOD_BINARY + bytes(4), size=12),
    binary_case("binary-size-past-the-end", "declares binary_data_size 40", GOOD_BINARY, size=40),
    binary_case("binary-size-negative", "'binary_data_size' must be a byte count", GOOD_BINARY, size=-3),
    binary_case("binary-without-header-length", "is the Inference-Header-Content-Length header missing?",
                GOOD_BINARY, header_length=False),
    Case("header-length-not-a-number", 400, "must be a byte count", infer_json(), headers=with_header_length("ten")),
    Case("header-length-past-the-end", 400, "Inference-Header-Content-Length is 100000", infer_json(),
         headers=with_header_length("100000")),
    # Malformed requests
    Case("malformed-json", 400, "malformed JSON", b'{"inputs": [{"name": "x",'),
    Case("not-an-object", 400, "Input should be an object", b"[1, 2, 3]"),
    Case("inputs-missing", 400, "field 'inputs': Field required", b'{"id": "no-inputs"}'),
    Case("shape-of-strings", 400, "input 'x' field 'shape[0]'", infer_json(shape=["1", 1, 3])),
    Case("id-not-a-string", 400, "field 'id'", b'{"id": 5, "inputs": []}'),
    Case("binary-data-not-a-bool", 400, "output 'last' 'binary_data' must be true or false",
         infer_json(outputs=[{"name": "last", "parameters": {"binary_data": "yes"}}])),
    Case("classification-extension", 400, "'classification' (the classification extension) is not supported",
         infer_json(outputs=[{"name": "last", "parameters": {"classification": 2}}])),
    # Limits and routes
    Case("oversize-body", 413, f"over the limit of {MAX_REQUEST_BYTES} bytes", OVERSIZE),
    Case("unknown-route", 404, "no endpoint GET /v3/things", path="/v3/things", method="GET"),
    Case("wrong-method", 405, "method GET is not allowed", path="/v2/models/lstm/infer", method="GET"),
]  # fmt: skip


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[RunningServer]:
    """This module's server has a small body limit (overrides the conftest fixture)."""
    env = {"SEQSERVE_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)}
    with running_server(store, "--grpc-port", "0", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request_gets_its_status_and_a_message_naming_the_problem(http: httpx.Client, case: Case) -> None:
    response = http.request(case.method, case.path, content=case.body or None, headers=case.headers)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/json"
    assert case.says in response.json()["error"]


def test_a_chunked_body_is_refused_while_it_streams_in(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield infer_json()[:-2]
        for _ in range(MAX_REQUEST_BYTES // 1024 + 1):
            yield b" " * 1024
        yield b"]}"

    response = http.post("/v2/models/lstm/infer", content=chunks())
    assert response.status_code == 413
    assert "over the limit" in response.json()["error"]


@pytest.mark.parametrize(
    ("request_id", "body"),
    [("undecodable-7", infer_json(datatype="FLOAT")), ("unservable-8", infer_json(name="y"))],
    ids=["rest-decoding", "data-plane"],
)
def test_failed_requests_are_logged_with_their_id(
    http: httpx.Client, server: RunningServer, request_id: str, body: bytes
) -> None:
    http.post("/v2/models/lstm/infer", content=body.replace(b"bad-request-42", request_id.encode()))
    lines = [line for line in server.log().splitlines() if request_id in line]
    assert lines, f"no log line names request {request_id}"


def test_the_server_still_serves_after_the_error_table(http: httpx.Client) -> None:
    response = http.post("/v2/models/lstm/infer", content=infer_json())
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["last", "sequence"]
    assert http.get("/v2/health/ready").status_code == 200
