"""uvicorn's WebSocket protocol (the `websockets` package, sans-I/O), with two things set right for seqserve.

- A refused upgrade (the ASGI denial response: our 401, 404, 503) is not logged as an ERROR
  "ASGI callable returned without completing handshake": uvicorn 0.54 forgets that the answer
  completed the handshake (Kludex/uvicorn#3138, open). Alerting on errors must not fire on a bad key.
- API keys never reach the log: at debug level `websockets` logs every header of the upgrade request
  to the logger uvicorn gives it, `Authorization` and `Sec-WebSocket-Protocol` included.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# How `websockets` logs a request header at debug level: one record each.
_HEADER_RECORD = "< %s: %s"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "sec-websocket-protocol"})


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _hide_keys(self.conn.logger)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True  # the denial response is on the wire (uvicorn#3138)


class _HideKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            record.msg == _HEADER_RECORD
            and isinstance(args, tuple)
            and len(args) == 2
            and str(args[0]).lower() in _SECRET_HEADERS
        ):
            record.args = (args[0], "[hidden]")
        return True


def _hide_keys(logger: Any) -> None:
    target = getattr(logger, "logger", logger)  # a LoggerAdapter logs through its logger
    if isinstance(target, logging.Logger) and not any(isinstance(f, _HideKeys) for f in target.filters):
        target.addFilter(_HideKeys())
