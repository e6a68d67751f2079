"""Reading a request body under the configured size limit (HTTP 413 above it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from seqserve.errors import InvalidInput, PayloadTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body of a Starlette request; see `read_limited`."""
    return await read_limited(request.stream(), request.headers.get("content-length"), limit)


async def read_limited(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The body arriving as `chunks`, refused as early as possible when it is over `limit` bytes.

    A declared Content-Length over the limit is refused before a byte is read; a chunked body is
    counted while it streams in, so an endless upload cannot fill the server's memory.
    """
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
    return b"".join(parts)
