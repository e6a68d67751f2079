"""`POST /v2/models/{name}[/versions/{version}]/infer`: decode, call the data plane, encode.

`infer_body` is the whole endpoint on bytes in and bytes out. The ASGI fast path
(`seqserve.rest.fast_path`) serves every infer request with it; the FastAPI routes below call it
too, so the endpoints are listed in the OpenAPI document and work on the bare FastAPI app.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response

from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.errors import SeqserveError
from seqserve.inference import InferRequest
from seqserve.rest.binary_extension import HEADER_LENGTH
from seqserve.rest.body import read_limited
from seqserve.rest.decode import decode_request, split_body
from seqserve.rest.encode import encode_response
from seqserve.rest.wire import peek_request_id

log = logging.getLogger(__name__)


async def read_infer_body(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int, name: str, version: str | None
) -> bytes:
    """An infer request's body, under `limit` bytes (`read_limited`); a refusal is logged like every failure."""
    try:
        return await read_limited(chunks, content_length, limit)
    except SeqserveError as e:
        log_failure(None, name, version, e)
        raise


async def infer_body(
    dataplane: DataPlane, name: str, version: str | None, body: bytes, header_length: str | None
) -> tuple[bytes, dict[str, str]]:
    """The response body and headers for a V2 infer request's `body`; raises SeqserveError for the
    client (logged with the request's `id`; the data plane logs its own failures)."""
    infer_request = _decode(body, header_length, name, version)
    response = await dataplane.infer(infer_request)
    try:
        return encode_response(infer_request, response)
    except SeqserveError as e:
        log_failure(infer_request.id, name, version, e)
        raise


def inference_router(dataplane: DataPlane, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v2/models", tags=["inference"])

    async def infer(request: Request, name: str, version: str | None) -> Response:
        # The raw Request, not a pydantic body parameter: tensor data must not go through FastAPI's
        # per-field validation, and the binary extension is not JSON at all.
        content_length, limit = request.headers.get("content-length"), settings.max_request_bytes
        body = await read_infer_body(request.stream(), content_length, limit, name, version)
        content, headers = await infer_body(dataplane, name, version, body, request.headers.get(HEADER_LENGTH))
        return Response(content, headers=headers)

    @router.post("/{name}/infer")
    async def infer_latest(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @router.post("/{name}/versions/{version}/infer")
    async def infer_version(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    return router


def _decode(body: bytes, header_length: str | None, name: str, version: str | None) -> InferRequest:
    header = b""
    try:
        header, binary = split_body(body, header_length)
        return decode_request(header, binary, name, version)
    except SeqserveError as e:
        log_failure(peek_request_id(header), name, version, e)
        raise


def log_failure(request_id: str | None, name: str, version: str | None, error: SeqserveError) -> None:
    # The V2 `id` ties a client's report to this line (DESIGN: "echoed ... and in the logs").
    which = f"model {name}" + (f" version {version}" if version else "")
    log.info("infer request %s for %s failed (%d): %s", request_id or "-", which, error.http_status, error)
