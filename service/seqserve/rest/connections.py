"""How long a REST client may take to send a request, and how many connections may be open at once.

uvicorn closes idle keep-alive connections, but a client that sends its headers or its body slowly,
or not at all, holds a connection (and the memory of its request) for ever; its own connection bound
(`limit_concurrency`) answers in plain text and also refuses health probes. This protocol adds read
deadlines and a bound answered with a V2 error body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from seqserve.throttled_log import ThrottledLog

log = logging.getLogger(__name__)

# Probes must see the truth about the server even when it is full of connections.
_ALWAYS_ANSWERED = (b"/v2/health/live", b"/v2/health/ready")


class ConnectionPolicy:
    """The limits of `LimitedHttpProtocol`, shared by all the connections of one server."""

    def __init__(self, header_read_timeout: float, body_read_timeout: float, max_connections: int) -> None:
        self.header_read_timeout = header_read_timeout
        self.body_read_timeout = body_read_timeout
        self.max_connections = max_connections  # 0: no bound
        self.log_slow = ThrottledLog(log, logging.INFO)
        self.log_full = ThrottledLog(log, logging.WARNING)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each part of a request and a connection bound.

    The headers must be in `header_read_timeout` seconds after the connection opens or its next
    request begins; the body `body_read_timeout` seconds after the headers. Past a deadline the
    client gets 408 where nothing was answered yet, and the connection is closed.
    """

    def __init__(self, *args: Any, policy: ConnectionPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy
        self._reading: str | None = None  # "headers", "body", or None between requests
        self._begun = False  # a byte of the request whose headers are awaited has arrived
        self._deadline: asyncio.TimerHandle | None = None

    # -- deadlines ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading is None:
            self._expect("headers")
        if self._reading == "headers":
            self._begun = True
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._reading != "headers":  # a pipelined request, in the bytes that ended the last one
            self._expect("headers")
        self._begun = True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._stop_deadline()
        self._reading = None

    def handle_websocket_upgrade(self) -> None:
        self._stop_deadline()  # the connection is the WebSocket protocol's from here on
        self._reading = None
        super().handle_websocket_upgrade()

    def _expect(self, part: str) -> None:
        self._stop_deadline()
        self._reading = part
        if part == "headers":
            self._begun = False
        seconds = self.policy.header_read_timeout if part == "headers" else self.policy.body_read_timeout
        self._deadline = self.loop.call_later(seconds, self._too_slow, seconds)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            # The server stopped reading (a pipelined request waits its turn, or the app has not
            # taken the body so far yet): the client is not the one that is late.
            self._deadline = self.loop.call_later(seconds, self._too_slow, seconds)
            return
        nothing_answered = self.cycle is None or self.cycle.response_complete
        if self._reading == "headers" and self._begun and nothing_answered:
            self._answer_408(f"the request headers did not arrive within {seconds:g} s (SEQSERVE_HEADER_READ_TIMEOUT)")
        elif self._reading == "body" and not self.cycle.response_started and not self.pipeline:
            # The app is waiting for the rest of the body: it hears that the client went away, and
            # whatever it might still send goes nowhere.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self._answer_408(f"the request body did not arrive within {seconds:g} s (SEQSERVE_BODY_READ_TIMEOUT)")
        self.policy.log_slow(
            "closed a REST connection from %s: its request's %s took over %g s",
            _peer(self.client),
            self._reading,
            seconds,
        )
        self.transport.close()

    def _answer_408(self, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        head = [STATUS_LINE[408]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)

    # -- the connection bound -----------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._expect("body")  # a request without a body completes at once and stops it again
        bound = self.policy.max_connections
        if not bound or len(self.connections) <= bound or self.url.split(b"?", 1)[0] in _ALWAYS_ANSWERED:
            super().on_headers_complete()
            return
        self.policy.log_full("REST requests refused: more than %d connections open (SEQSERVE_MAX_CONNECTIONS)", bound)
        app, self.app = self.app, _Refusal(bound)
        try:
            super().on_headers_complete()
        finally:
            self.app = app


class _Refusal:
    """The answer to a request on a connection beyond the bound: 503, and the connection closed."""

    def __init__(self, bound: int) -> None:
        message = f"the server has more than {bound} REST connections open (SEQSERVE_MAX_CONNECTIONS); retry later"
        self.body = json.dumps({"error": message}).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
