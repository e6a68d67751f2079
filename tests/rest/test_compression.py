"""HTTP compression both ways on a real server: `Content-Encoding: gzip | deflate` request bodies are
inflated under the body limit (which counts the inflated bytes), `Accept-Encoding` compresses answers.

tritonclient.http is the client where it can be (its `request_compression_algorithm` and
`response_compression_algorithm`); raw httpx streams and sockets where the bytes on the wire matter.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from helpers.onnx_models import run_directly
from helpers.server import RunningServer, running_server

LIMIT = 8 << 20  # max_request_bytes of this module's server
# Large enough that every answer is worth compressing; the binary input is over 1 MiB inflated, so
# the server inflates part of it off the event loop.
X = np.random.default_rng(14).standard_normal((4, 30_000, 3)).astype(np.float32)
SMALL_X = X[:2, :50]


def _deflate(data: bytes) -> bytes:
    return zlib.compress(data)  # HTTP's "deflate" is the zlib format (RFC 9110), as tritonclient sends it


COMPRESS = {"gzip": gzip.compress, "deflate": _deflate}
INFLATE = {"gzip": gzip.decompress, "deflate": zlib.decompress}


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[RunningServer]:
    env = {"SEQSERVE_MAX_REQUEST_BYTES": str(LIMIT)}
    with running_server(store, "--grpc-port", "0", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.http_url, network_timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """1 GiB of zeros as one gzip stream of about 1 MB."""
    stream = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join([stream.compress(zeros) for _ in range(1024)] + [stream.flush()])


def _infer(
    client: triton.InferenceServerClient, x: np.ndarray, binary: bool, request: str | None, response: str | None
) -> dict[str, np.ndarray]:
    tensor = triton.InferInput("x", list(x.shape), "FP32").set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("last", "sequence")]
    result = client.infer(
        "lstm",
        [tensor],
        outputs=outputs,
        request_compression_algorithm=request,
        response_compression_algorithm=response,
    )
    return {n: result.as_numpy(n) for n in ("last", "sequence")}


@dataclass
class RawAnswer:
    """An answer as it came over the wire (httpx would inflate it on reading)."""

    status_code: int
    headers: httpx.Headers
    content: bytes


def _raw_post(server: RunningServer, path: str, body: bytes, headers: dict[str, str]) -> RawAnswer:
    with httpx.Client(timeout=120) as http, http.stream("POST", f"http://{server.http_url}{path}", content=body,
                                                        headers=headers) as response:  # fmt: skip
        return RawAnswer(response.status_code, response.headers, b"".join(response.iter_raw()))


def _peak_memory(server: RunningServer) -> int:
    """The server process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("response", ["gzip", "deflate"])
@pytest.mark.parametrize("request_", ["gzip", "deflate"], ids=["gzip-in", "deflate-in"])
def test_tritonclient_compressed_requests_and_answers_equal_plain_ones(
    client: triton.InferenceServerClient, store: Path, binary: bool, response: str, request_: str
) -> None:
    x = X if binary else SMALL_X  # a 360,000-float JSON body would take seconds to decode
    plain = _infer(client, x, binary, None, None)
    compressed = _infer(client, x, binary, request_, response)
    expected = run_directly(store / "lstm" / "1", {"x": x})
    for name in ("last", "sequence"):
        np.testing.assert_array_equal(compressed[name], plain[name])
        np.testing.assert_allclose(compressed[name], expected[name], atol=1e-6)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_binary_answer_keeps_the_header_length_of_the_inflated_body(
    server: RunningServer, encoding: str
) -> None:
    head = json.dumps({
        "inputs": [{"name": "x", "shape": list(SMALL_X.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": SMALL_X.nbytes}}],
        "outputs": [{"name": "sequence", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    body = COMPRESS[encoding](head + SMALL_X.tobytes())
    headers = {
        "content-encoding": encoding,
        "accept-encoding": encoding,
        # Counts the inflated body, as in Triton: the JSON head of the body once inflated.
        "inference-header-content-length": str(len(head)),
    }
    answer = _raw_post(server, "/v2/models/lstm/infer", body, headers)
    assert answer.status_code == 200, answer.content[:300]
    assert answer.headers["content-encoding"] == encoding
    assert int(answer.headers["content-length"]) == len(answer.content)
    inflated = INFLATE[encoding](answer.content)
    length = int(answer.headers["inference-header-content-length"])
    document = json.loads(inflated[:length])
    assert document["outputs"][0]["parameters"] == {"binary_data_size": SMALL_X.nbytes // 3 * 4}
    assert len(inflated) == length + SMALL_X.nbytes // 3 * 4


def test_a_small_answer_goes_out_as_it_is_unless_identity_is_refused(server: RunningServer) -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}],
                       "outputs": [{"name": "last"}]}).encode()  # fmt: skip
    small = _raw_post(server, "/v2/models/lstm/infer", body, {"accept-encoding": "gzip"})
    assert small.status_code == 200 and "content-encoding" not in small.headers
    assert json.loads(small.content)["outputs"][0]["name"] == "last"
    insisted = _raw_post(server, "/v2/models/lstm/infer", body, {"accept-encoding": "gzip, identity;q=0"})
    assert insisted.headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(insisted.content)) == json.loads(small.content)


def test_other_endpoints_answer_compressed_too(server: RunningServer) -> None:
    with (
        httpx.Client() as http,
        http.stream(
            "GET", f"http://{server.http_url}/openapi.json", headers={"accept-encoding": "deflate"}
        ) as response,
    ):
        raw = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "deflate"
    assert int(response.headers["content-length"]) == len(raw)
    assert "/v2/models/{name}/infer" in json.loads(zlib.decompress(raw))["paths"]


@pytest.mark.parametrize("path", ["/v2/models/lstm/infer", "/v2/models/stateful/sessions"])
def test_a_zip_bomb_is_refused_413_without_being_inflated(server: RunningServer, gzip_bomb: bytes, path: str) -> None:
    before = _peak_memory(server)
    started = time.monotonic()
    answer = httpx.post(f"http://{server.http_url}{path}", content=gzip_bomb,
                        headers={"content-encoding": "gzip"}, timeout=60)  # fmt: skip
    assert answer.status_code == 413, answer.text
    assert f"over the limit of {LIMIT} bytes" in answer.json()["error"]
    assert time.monotonic() - started < 10
    # At most the limit is inflated: the server's peak memory grows by far less than the 1 GiB.
    assert _peak_memory(server) - before < 4 * LIMIT


@pytest.mark.parametrize(
    ("body", "encoding", "message"),
    [
        (b"\x1f\x8b\x08\x00not gzip at all", "gzip", "not valid gzip data"),
        (gzip.compress(b'{"inputs": []}')[:-6], "gzip", "gzip data ends early"),
        (b"plain text", "deflate", "not valid deflate data"),
        (zlib.compress(b'{"inputs": []}') + b"tail", "deflate", "after the end of the deflate data"),
    ],
    ids=["corrupt-gzip", "truncated-gzip", "corrupt-deflate", "trailing-bytes"],
)
def test_a_broken_compressed_body_is_400(server: RunningServer, body: bytes, encoding: str, message: str) -> None:
    answer = httpx.post(f"http://{server.http_url}/v2/models/lstm/infer", content=body,
                        headers={"content-encoding": encoding})  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


@pytest.mark.parametrize("path", ["/v2/models/lstm/infer", "/v2/models/stateful/sessions"])
def test_an_unknown_encoding_is_415_naming_the_ones_understood(server: RunningServer, path: str) -> None:
    # As Triton answers: 415 Unsupported Media Type.
    answer = httpx.post(f"http://{server.http_url}{path}", content=b"{}", headers={"content-encoding": "br"})
    assert answer.status_code == 415, answer.text
    assert "'br'" in answer.json()["error"] and "gzip, deflate" in answer.json()["error"]


def test_identity_is_no_encoding(server: RunningServer) -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": [0, 0, 0]}]})
    answer = httpx.post(f"http://{server.http_url}/v2/models/lstm/infer", content=body,
                        headers={"content-encoding": "identity"})  # fmt: skip
    assert answer.status_code == 200, answer.text


def test_a_chunked_gzip_body_is_inflated(server: RunningServer) -> None:
    body = gzip.compress(json.dumps({"inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32",
                                                 "data": [0, 0, 0]}]}).encode())  # fmt: skip
    head = b"POST /v2/models/lstm/infer HTTP/1.1\r\nhost: seqserve\r\ncontent-encoding: gzip\r\n"
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as connection:
        connection.sendall(head + b"transfer-encoding: chunked\r\n\r\n")
        for piece in (body[:10], body[10:]):
            connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        connection.sendall(b"0\r\n\r\n")
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_session_endpoints_take_compressed_states(server: RunningServer, encoding: str) -> None:
    base = f"http://{server.http_url}/v2/models/stateful/sessions"
    h = [0.5, -0.5, 0.25, 0.0]
    states = {"inputs": [{"name": "lstm.h", "datatype": "FP32", "shape": [1, 4], "data": h},
                         {"name": "lstm.c", "datatype": "FP32", "shape": [1, 4], "data": [0.0] * 4}]}  # fmt: skip
    body = COMPRESS[encoding](json.dumps(states).encode())
    created = httpx.post(base, content=body, headers={"content-encoding": encoding})
    assert created.status_code == 200, created.text
    session = created.json()["id"]
    read = {t["name"]: t["data"] for t in httpx.get(f"{base}/{session}").json()["outputs"]}
    assert read["lstm.h"] == h
    states["inputs"][0]["data"] = [1.0] * 4
    replaced = httpx.put(f"{base}/{session}", content=COMPRESS[encoding](json.dumps(states).encode()),
                         headers={"content-encoding": encoding})  # fmt: skip
    assert replaced.status_code == 200, replaced.text
    assert {t["name"]: t["data"] for t in replaced.json()["outputs"]}["lstm.h"] == [1.0] * 4


def test_an_empty_body_declared_gzip_is_an_empty_body(server: RunningServer) -> None:
    created = httpx.post(f"http://{server.http_url}/v2/models/stateful/sessions", headers={"content-encoding": "gzip"})
    assert created.status_code == 200, created.text
