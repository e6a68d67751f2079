"""HTTP compression of REST bodies: `Content-Encoding` on requests, `Accept-Encoding` on answers.

gzip and deflate (the zlib format, RFC 9110), the two Triton and tritonclient speak. A request body
is inflated in bounded pieces and refused as soon as the inflated bytes pass the body limit, so a
zip bomb costs at most `max_request_bytes` of memory, never its inflated size. A large body is
inflated or compressed on a thread, so the event loop keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable
from functools import lru_cache

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seqserve.errors import InvalidInput, PayloadTooLarge, UnsupportedEncoding

ENCODINGS = ("gzip", "deflate")
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# Bytes inflated or compressed on the event loop; beyond this the rest of the work goes to a thread
# (a streamed step's body is a few hundred bytes; a thread hop costs ~50 us).
INLINE_BYTES = 1 << 20
# Most output of one call into zlib: the memory a body's inflation holds beyond its own result.
_PIECE = 256 << 10
# Answers shorter than this go out as they are: gzip's 18-byte frame and the time to make it buy
# little there, and clients (tritonclient included) read an answer without Content-Encoding as is.
MIN_COMPRESS_BYTES = 1024
# zlib's fastest level: float tensors barely compress at higher levels, and take 3-5x longer.
_LEVEL = 1


def request_encoding(content_encoding: str | None) -> str | None:
    """The compression of a request body, from its `Content-Encoding`; None for a plain body.

    Raises UnsupportedEncoding (415, as Triton) for any other coding, stacked codings included.
    """
    if content_encoding is None:
        return None
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ENCODINGS:
        return codings[0]
    raise UnsupportedEncoding(
        f"Content-Encoding {content_encoding!r} is not supported; send the body as gzip, deflate or identity"
    )


async def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` inflated; PayloadTooLarge once it passes `limit` bytes, InvalidInput if it is not valid data."""
    inflation = _Inflation(body, encoding, limit)
    if not inflation.run(INLINE_BYTES):
        await asyncio.to_thread(inflation.run, None)
    return inflation.result()


class _Inflation:
    """One body's inflation, resumable: part of it on the event loop, the rest on a thread."""

    def __init__(self, body: bytes, encoding: str, limit: int) -> None:
        self.encoding, self.limit = encoding, limit
        self._stream = zlib.decompressobj(_WBITS[encoding])
        self._input = body
        self._parts: list[bytes] = []
        self._size = 0
        self._full = False  # the last call filled its output: zlib may hold more for an empty input

    def run(self, budget: int | None) -> bool:
        """Inflates until done or `budget` bytes are out (None: no budget); True when done."""
        produced = 0
        while self._input or self._full:
            if budget is not None and produced >= budget:
                return False
            room = min(self.limit - self._size + 1, _PIECE)  # one byte past the limit tells it is passed
            try:
                piece = self._stream.decompress(self._input, room)
            except zlib.error as e:
                raise InvalidInput(f"the request body is not valid {self.encoding} data: {e}") from None
            self._size += len(piece)
            if self._size > self.limit:
                raise PayloadTooLarge(f"request body inflated is over the limit of {self.limit} bytes")
            self._parts.append(piece)
            produced += len(piece)
            self._full = len(piece) == room
            self._input = self._stream.unconsumed_tail
            if self._stream.eof:
                self._next_member()
        if not self._stream.eof:
            raise InvalidInput(f"the request body's {self.encoding} data ends early: it is truncated")
        return True

    def _next_member(self) -> None:
        """After the end of the data: a gzip file may hold more members (`cat a.gz b.gz`); nothing else may follow."""
        rest = self._stream.unused_data
        self._full = False
        if not rest:
            self._input = b""
        elif self.encoding == "gzip":
            self._stream = zlib.decompressobj(_WBITS["gzip"])
            self._input = rest
        else:
            raise InvalidInput(f"the request body has {len(rest)} bytes after the end of the {self.encoding} data")

    def result(self) -> bytes:
        return b"".join(self._parts)


def answer_encoding(accept_encoding: str | None, size: int) -> str | None:
    """The coding to compress an answer of `size` bytes with, from the request's `Accept-Encoding`.

    gzip before deflate at equal preference; None for a short answer, unless the client refuses
    `identity` (then it gets what it accepts, whatever the size).
    """
    if not accept_encoding:
        return None
    chosen, identity_refused = _preference(accept_encoding)
    return chosen if size >= MIN_COMPRESS_BYTES or identity_refused else None


@lru_cache(maxsize=64)
def _preference(accept_encoding: str) -> tuple[str | None, bool]:
    """The coding a client prefers among ours, and whether it refuses identity (a client sends
    the same header on every request: parsed once)."""
    weights = dict(_codings(accept_encoding))
    wildcard = weights.get("*")
    chosen = max(ENCODINGS, key=lambda c: (weights.get(c, wildcard or 0.0), c == "gzip"))
    identity_refused = weights.get("identity", 1.0 if wildcard is None else wildcard) <= 0
    return (chosen if weights.get(chosen, wildcard or 0.0) > 0 else None), identity_refused


def _codings(accept_encoding: str) -> Iterable[tuple[str, float]]:
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0  # a malformed preference is no acceptance
        if coding.strip():
            yield coding.strip().lower(), weight


async def compress(content: bytes, encoding: str) -> bytes:
    """`content` compressed with `encoding`; a large one on a thread."""
    if len(content) > INLINE_BYTES:
        return await asyncio.to_thread(_compress, content, encoding)
    return _compress(content, encoding)


def _compress(content: bytes, encoding: str) -> bytes:
    stream = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS[encoding])
    return stream.compress(content) + stream.flush()


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class CompressAnswers:
    """ASGI middleware: compresses the answers of the REST endpoints a client asks it for.

    It sits inside `InferRouting` (infer compresses its own answers, without this layer's cost);
    an answer streamed in several messages, or already encoded, goes out as it is.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        accept = _header(scope["headers"], b"accept-encoding") if scope["type"] == "http" else None
        if not accept or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        start: Message | None = None

        async def send_compressed(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message  # held until the body says whether to compress
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            held, start = start, None
            content = message.get("body", b"")
            encoding = answer_encoding(accept, len(content))
            if (
                message.get("more_body")
                or not content
                or encoding is None
                or _header(held["headers"], b"content-encoding") is not None
            ):
                await send(held)
                await send(message)
                return
            compressed = await compress(content, encoding)
            await send({**held, "headers": compressed_headers(held["headers"], encoding, len(compressed))})
            await send({**message, "body": compressed})

        await self.app(scope, receive, send_compressed)


def compressed_headers(headers: Iterable[tuple[bytes, bytes]], encoding: str, length: int) -> list[tuple[bytes, bytes]]:
    """`headers` of an answer now compressed to `length` bytes with `encoding`."""
    kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    return kept + [
        (b"content-length", str(length).encode("latin-1")),
        (b"content-encoding", encoding.encode("latin-1")),
        (b"vary", b"Accept-Encoding"),
    ]
