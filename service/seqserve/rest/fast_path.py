"""The infer endpoint served straight from ASGI, in front of the FastAPI app.

A streamed step over REST spent ~44% of the event loop in uvicorn and FastAPI (bench/README.md):
middleware layers, routing, the request object, the response object, run for a request whose whole
handling is bytes in, bytes out. `POST .../infer` takes this shorter way to the same handler
(`seqserve.rest.inference.infer_body`) with the same answers, errors included; every other request
goes to the FastAPI app unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

from starlette.types import ASGIApp, Receive, Scope, Send

from seqserve.dataplane import DataPlane
from seqserve.errors import SeqserveError
from seqserve.rest.binary_extension import HEADER_LENGTH
from seqserve.rest.error_handlers import error_response, unexpected_error_message
from seqserve.rest.inference import infer_body, read_infer_body

log = logging.getLogger(__name__)

# What FastAPI's `/v2/models/{name}/infer` and `/v2/models/{name}/versions/{version}/infer` match.
_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_HEADER_LENGTH = HEADER_LENGTH.lower()


class _Disconnected(Exception):
    """The client went away before its request body was in."""


class InferFastPath:
    """ASGI app: infer requests handled here, the rest passed to `app`."""

    def __init__(self, app: ASGIApp, dataplane: DataPlane, max_request_bytes: int) -> None:
        self.app = app
        self.dataplane = dataplane
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _INFER_PATH.fullmatch(_route_path(scope))
            if match is not None:
                await self._infer(scope, receive, send, match.group(1), match.group(2))
                return
        await self.app(scope, receive, send)

    async def _infer(self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None) -> None:
        # ASGI header names are lower-case bytes; where a header repeats, the first counts (as in Starlette).
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        try:
            limit = self.max_request_bytes
            body = await read_infer_body(_body_chunks(receive), headers.get("content-length"), limit, name, version)
            content, response_headers = await infer_body(
                self.dataplane, name, version, body, headers.get(_HEADER_LENGTH)
            )
        except _Disconnected:
            return
        except SeqserveError as e:
            await error_response(e.http_status, e.message)(scope, receive, send)
            return
        except Exception as e:  # a bug: the client gets the class name only, the log the traceback
            log.exception("infer request for model %s failed unexpectedly", name)
            await error_response(500, unexpected_error_message(e))(scope, receive, send)
            return
        raw_headers = [(b"content-length", str(len(content)).encode("latin-1"))]
        raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response_headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        await send({"type": "http.response.body", "body": content})


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _route_path(scope: Scope) -> str:
    """The path routes match against: without the `root_path` a proxy mounted the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
