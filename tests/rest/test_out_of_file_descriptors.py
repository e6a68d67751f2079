"""A server out of file descriptors goes on: it logs the condition at a bounded rate (not once per
failed accept) and serves again as soon as descriptors are free."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import time
from pathlib import Path

import httpx
import pytest

from helpers.server import running_server
from seqserve.rest.listener import listen_on
from seqserve.throttled_log import ThrottledLog

SPARE = 4  # descriptors the server may open beyond those it holds when the limit is lowered
CONNECTIONS = 60
STARVED_SECONDS = 3.0


def test_running_out_of_file_descriptors_is_logged_at_a_bounded_rate_and_the_server_recovers(
    store: Path, tmp_path: Path
) -> None:
    with running_server(store, log_dir=tmp_path) as server:
        pid = server.process.pid
        held = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (held + SPARE, held + SPARE))
        logged_before = len(server.log().splitlines())
        clients = []
        try:
            for port in (server.http_port, server.grpc_port):
                for _ in range(CONNECTIONS // 2):
                    # The kernel completes the handshakes; the server cannot accept most of them.
                    clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            time.sleep(STARVED_SECONDS)
            lines = server.log().splitlines()[logged_before:]
        finally:
            for client in clients:
                client.close()
        about_descriptors = [line for line in lines if "file descriptor" in line.lower() or "open files" in line]
        assert about_descriptors, "\n".join(lines[-20:])
        # About one line a second per listener (REST's and gRPC's), and a few more (a failed store scan).
        assert len(lines) < 10 * STARVED_SECONDS, f"{len(lines)} log lines in {STARVED_SECONDS} s:\n" + "\n".join(
            lines[:30]
        )
        # With the descriptors free again, the server answers: REST, then a real inference over it.
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"http://{server.http_url}/v2/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not recover:\n" + "\n".join(lines[-20:])
            time.sleep(0.1)
        body = {"inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": [0.5, -0.25, 1.0]}]}
        assert httpx.post(f"http://{server.http_url}/v2/models/lstm/infer", json=body, timeout=10).status_code == 200
        assert server.process.poll() is None


def test_a_repeated_message_is_logged_once_per_interval_with_the_count_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttled = ThrottledLog(logging.getLogger("flood"), logging.ERROR, interval=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="flood"):
        for tick in range(3000):  # 3 s of a failure every millisecond
            now[0] = tick / 1000
            throttled("accept failed: %s", "EMFILE")
    assert [r.getMessage() for r in caplog.records] == [
        "accept failed: EMFILE",
        "accept failed: EMFILE (999 more like it since the last such message)",
        "accept failed: EMFILE (999 more like it since the last such message)",
    ]


async def test_accepted_connections_answer_without_waiting_for_a_delayed_ack() -> None:
    """asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets made with IPPROTO_TCP;
    without it a small answer can wait ~40 ms for the client's delayed ACK."""
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Record(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    listener = listen_on("127.0.0.1", 0)
    server = await asyncio.get_running_loop().create_server(Record, sock=listener)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
        assert await asyncio.wait_for(accepted, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
