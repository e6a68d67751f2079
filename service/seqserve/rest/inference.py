"""`POST /v2/models/{name}[/versions/{version}]/infer`: read the body, decode, call the data plane, encode.

The endpoint is a plain ASGI app in the FastAPI app's own route table (`infer_routes`), so it is
matched like every other route and every middleware of the app sees it. It is not a FastAPI path
operation: a streamed step's whole handling is bytes in, bytes out, and FastAPI's request object,
dependency solving and response object cost more than the step itself (bench/README.md). Its
OpenAPI entries are added by `seqserve.rest.openapi`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from seqserve.dataplane import DataPlane
from seqserve.errors import SeqserveError
from seqserve.rest.auth import owner_of
from seqserve.rest.binary_extension import HEADER_LENGTH
from seqserve.rest.body import read_limited
from seqserve.rest.compression import answer_encoding, compress, compressed_headers
from seqserve.rest.decode_offload import BodyDecoder, DecodeFailed
from seqserve.rest.encode import encode_answer
from seqserve.rest.error_handlers import error_response, seqserve_error_response, unexpected_error_message
from seqserve.rest.openapi import INFER_PATHS

log = logging.getLogger(__name__)

_HEADER_LENGTH = HEADER_LENGTH.lower()


class _Disconnected(Exception):
    """The client went away before its request body was in."""


class InferEndpoint:
    """The ASGI app behind both infer paths (`scope["path_params"]` holds name and version)."""

    def __init__(self, dataplane: DataPlane, max_request_bytes: int) -> None:
        self.dataplane = dataplane
        self.max_request_bytes = max_request_bytes
        # Large bodies are decoded off the event loop (seqserve.rest.decode_offload).
        self.decoder = BodyDecoder()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        name, version = params["name"], params.get("version")
        # ASGI header names are lower-case bytes; where a header repeats, the first counts (as in Starlette).
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        try:
            body = await self._read(receive, headers, name, version)
            content, response_headers = await self._answer(
                name, version, body, headers.get(_HEADER_LENGTH), owner_of(scope)
            )
            encoding = answer_encoding(headers.get("accept-encoding"), len(content))
            if encoding is not None:  # Inference-Header-Content-Length still counts the uncompressed body
                content = await compress(content, encoding)
        except _Disconnected:
            return
        except SeqserveError as e:
            await seqserve_error_response(e)(scope, receive, send)
            return
        except Exception as e:  # a bug: the client gets the class name only, the log the traceback
            log.exception("infer request for model %s failed unexpectedly", name)
            await error_response(500, unexpected_error_message(e))(scope, receive, send)
            return
        raw_headers = [(b"content-length", str(len(content)).encode("latin-1"))]
        raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response_headers.items()]
        if encoding is not None:
            raw_headers = compressed_headers(raw_headers, encoding, len(content))
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        await send({"type": "http.response.body", "body": content})

    async def _read(self, receive: Receive, headers: dict[str, str], name: str, version: str | None) -> bytes:
        """The body, inflated, under the size limit (`read_limited`); a refusal is logged like every failure."""
        try:
            return await read_limited(
                _body_chunks(receive), headers.get("content-length"), self.max_request_bytes,
                headers.get("content-encoding"),
            )  # fmt: skip
        except SeqserveError as e:
            log_failure(None, name, version, e)
            raise

    async def _answer(
        self, name: str, version: str | None, body: bytes, header_length: str | None, owner: str | None
    ) -> tuple[bytes, dict[str, str]]:
        """The response body and headers; raises SeqserveError for the client (logged with the
        request's `id`; the data plane logs its own failures)."""
        try:
            request = await self.decoder.decode(body, header_length, name, version)
        except DecodeFailed as e:
            log_failure(e.request_id, name, version, e.error)
            raise e.error from None
        request.owner = owner
        response = await self.dataplane.infer(request)
        try:
            return await encode_answer(request, response)
        except SeqserveError as e:
            log_failure(request.id, name, version, e)
            raise


def infer_routes(dataplane: DataPlane, max_request_bytes: int) -> list[Route]:
    endpoint = InferEndpoint(dataplane, max_request_bytes)
    return [Route(path, endpoint, methods=["POST"]) for path in INFER_PATHS]


class InferRouting:
    """The app's innermost middleware: a request one of the infer routes matches is handed to it
    here, without FastAPI's exception and exit-stack layers and the walk over the route table (the
    endpoint answers its own errors and holds no resources). Middleware added to the app wraps
    this, so it sees infer requests; everything else, a wrong method on an infer path included,
    goes on to the router, where the same routes sit."""

    def __init__(self, app: ASGIApp, routes: list[Route]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def log_failure(request_id: str | None, name: str, version: str | None, error: SeqserveError) -> None:
    # The V2 `id` ties a client's report to this line (DESIGN: "echoed ... and in the logs").
    which = f"model {name}" + (f" version {version}" if version else "")
    log.info("infer request %s for %s failed (%d): %s", request_id or "-", which, error.http_status, error)
