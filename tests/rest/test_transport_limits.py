"""Connections that hold the REST server without finishing a request, and too many of them.

Raw sockets against a real `seqserve serve`: a client that stops sending its headers or its body is
answered 408 and closed after the configured read timeout; connections beyond the configured bound
are answered 503 with a V2 error body; the server goes on serving everyone else.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers.server import RunningServer, running_server

READ_TIMEOUT = 0.5  # seconds, both for headers and for bodies
WAIT = 10.0  # how long a test waits for an answer that must come


@pytest.fixture(scope="module")
def patient_server(store: Path) -> Iterator[RunningServer]:
    env = {"SEQSERVE_HEADER_READ_TIMEOUT": str(READ_TIMEOUT), "SEQSERVE_BODY_READ_TIMEOUT": str(READ_TIMEOUT)}
    with running_server(store, "--grpc-port", "0", env=env) as running:
        yield running


def _connect(server: RunningServer) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.http_port), timeout=WAIT)
    return connection


def _read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def _status_and_body(answer: bytes) -> tuple[int, dict[str, object], str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body), head.decode("latin-1").lower()


def test_headers_that_stop_arriving_are_answered_408_and_the_connection_closed(patient_server: RunningServer) -> None:
    with _connect(patient_server) as connection:
        connection.sendall(b"POST /v2/models/lstm/infer HTTP/1.1\r\nhost: seqserve\r\ncontent-type: applic")
        began = time.monotonic()
        answer = _read_until_closed(connection)
    status, body, head = _status_and_body(answer)
    assert status == 408, answer
    assert "headers" in str(body["error"]) and "SEQSERVE_HEADER_READ_TIMEOUT" in str(body["error"]), body
    assert "connection: close" in head
    assert time.monotonic() - began < WAIT / 2


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(patient_server: RunningServer) -> None:
    with _connect(patient_server) as connection:
        assert _read_until_closed(connection) == b""  # nothing asked, nothing answered: just closed


@pytest.mark.parametrize("path", ["/v2/models/lstm/infer", "/v2/models/stateful/sessions"])
def test_a_body_that_stops_arriving_is_answered_408_and_the_connection_closed(
    patient_server: RunningServer, path: str
) -> None:
    logged_before = len(patient_server.log().splitlines())
    with _connect(patient_server) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nhost: seqserve\r\ncontent-type: application/json\r\n".encode()
            + b'content-length: 1000\r\n\r\n{"inputs": ['
        )
        answer = _read_until_closed(connection)
    status, body, head = _status_and_body(answer)
    assert status == 408, answer
    assert "body" in str(body["error"]) and "SEQSERVE_BODY_READ_TIMEOUT" in str(body["error"]), body
    assert "connection: close" in head
    time.sleep(0.2)  # the route has heard of the disconnection by now
    logged = patient_server.log().splitlines()[logged_before:]
    assert not any("Traceback" in line for line in logged), "\n".join(logged)  # a slow client is no server error


def test_a_body_trickling_in_is_cut_at_the_body_timeout_even_after_the_answer(patient_server: RunningServer) -> None:
    """A GET carrying a body its route never reads: answered at once, then the rest of the body
    must still arrive in time or the connection is closed (no slow drip holds it open)."""
    with _connect(patient_server) as connection:
        connection.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: seqserve\r\ncontent-length: 100000\r\n\r\nx")
        connection.settimeout(0.05)
        began = time.monotonic()
        received, closed = b"", False
        while not closed and time.monotonic() - began < WAIT:
            try:
                chunk = connection.recv(65536)
                received += chunk
                closed = not chunk
            except TimeoutError:
                try:
                    connection.sendall(b"x")  # a byte now and then, never the whole body
                except OSError:  # reset by the server
                    closed = True
    assert closed, "the trickle held the connection open"
    assert received.startswith(b"HTTP/1.1 200"), received


def test_slow_clients_do_not_keep_others_from_being_served(patient_server: RunningServer) -> None:
    stalled = [_connect(patient_server) for _ in range(20)]
    try:
        for connection in stalled:
            connection.sendall(b"POST /v2/models/lstm/infer HTTP/1.1\r\nhost: seqserve\r\ncontent-length: 10\r\n\r\n")
        body = {"inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": [0.5, -0.25, 1.0]}]}
        answer = httpx.post(f"http://{patient_server.http_url}/v2/models/lstm/infer", json=body, timeout=WAIT)
        assert answer.status_code == 200, answer.text
    finally:
        for connection in stalled:
            connection.close()


# -- a bound on connections ------------------------------------------------------------------------

MAX_CONNECTIONS = 3


@pytest.fixture(scope="module")
def bounded_server(store: Path) -> Iterator[RunningServer]:
    with running_server(store, "--grpc-port", "0", env={"SEQSERVE_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}) as running:
        yield running


def _get(connection: socket.socket, path: str) -> None:
    connection.sendall(f"GET {path} HTTP/1.1\r\nhost: seqserve\r\n\r\n".encode())


def test_connections_beyond_the_bound_are_answered_503_and_closed(bounded_server: RunningServer) -> None:
    held = [_connect(bounded_server) for _ in range(MAX_CONNECTIONS)]
    try:
        for connection in held:  # each served: the bound counts connections, it does not refuse them
            _get(connection, "/v2/health/live")
            assert connection.recv(65536).startswith(b"HTTP/1.1 200")
        with _connect(bounded_server) as one_too_many:
            _get(one_too_many, "/v2/models/lstm")
            answer = _read_until_closed(one_too_many)
        status, body, head = _status_and_body(answer)
        assert status == 503, answer
        assert "SEQSERVE_MAX_CONNECTIONS" in str(body["error"]) and str(MAX_CONNECTIONS) in str(body["error"]), body
        assert "retry-after:" in head and "connection: close" in head
        # Probes still get the truth: a full server is alive.
        with _connect(bounded_server) as probe:
            _get(probe, "/v2/health/live")
            assert probe.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for connection in held:
            connection.close()
    # Once the held connections are gone, a new one is served again.
    deadline = time.monotonic() + WAIT
    while (status := httpx.get(f"http://{bounded_server.http_url}/v2/models/lstm", timeout=WAIT).status_code) == 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status == 200
