"""Reading a request body under the configured size limit (HTTP 413 above it), inflated when the
client compressed it (`Content-Encoding`, seqserve.rest.compression)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from seqserve.errors import InvalidInput, PayloadTooLarge
from seqserve.rest.compression import inflate, request_encoding

JOIN_INLINE_BYTES = 4 << 20


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body of a Starlette request, inflated; see `read_limited`."""
    headers = request.headers
    return await read_limited(request.stream(), headers.get("content-length"), limit, headers.get("content-encoding"))


async def read_json_object(request: Request, limit: int, what: str) -> dict[str, Any]:
    """The request's body as a JSON object, `what` naming the call in errors; an empty body is `{}`."""
    raw = await read_body(request, limit)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except RecursionError:
        raise InvalidInput(f"{what}: the body is JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidInput(f"{what}: the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidInput(f"{what}: the body must be a JSON object, not {type(body).__name__}")
    return body


async def read_limited(
    chunks: AsyncIterator[bytes], declared: str | None, limit: int, content_encoding: str | None = None
) -> bytes:
    """The body arriving as `chunks`, refused as early as possible when it is over `limit` bytes.

    A declared Content-Length over the limit is refused before a byte is read; a chunked body is
    counted while it streams in, so an endless upload cannot fill the server's memory. A compressed
    body (`content_encoding`) is held to the limit twice: as it arrives, and inflated, where the
    inflation stops one byte past the limit (a zip bomb is refused, not inflated). An unknown
    encoding is refused before a byte is read.
    """
    encoding = request_encoding(content_encoding)
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidInput(f"Content-Length header must be a byte count, got {declared!r}") from None
        if length > limit:
            raise PayloadTooLarge(f"request body of {length} bytes is over the limit of {limit} bytes")
    parts = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        parts.append(chunk)
    # Joining 64 MiB takes ~30 ms; bytes.join lets go of the GIL for it, so a thread keeps the loop free.
    body = b"".join(parts) if size <= JOIN_INLINE_BYTES else await asyncio.to_thread(b"".join, parts)
    # No body is no body, whatever its declared encoding (a session created without states).
    return body if encoding is None or not body else await inflate(body, encoding, limit)
