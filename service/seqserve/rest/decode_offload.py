"""Decoding large request bodies away from the event loop.

A small body (nearly every streamed step) is decoded where it arrives: handing it elsewhere would
cost more than decoding it. A large one is not, or health probes and every other client wait:
a 61 MiB JSON body took ~5 s to decode here, and a thread does not help with JSON, because the
parser and NumPy's conversion of a 16-million-element list hold the GIL for seconds at a time. So:

- a body whose JSON part is at most INLINE_JSON_BYTES and whose binary part is small: inline;
- binary tensor data with a small JSON head: a thread (NumPy copies bytes; no Python objects per value);
- a large JSON part: a worker process of its own (`seqserve.rest.decode_worker`), which also keeps
  the millions of Python numbers a JSON list becomes out of the server's memory: the process ends
  after the body, and its memory with it. JSON_WORKERS of them at once; more bodies wait their turn.

Each path runs the same `decode_request`, so the answers, errors included, are the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import subprocess
import sys

from seqserve.errors import ModelNotReady, SeqserveError
from seqserve.inference import InferRequest
from seqserve.rest.decode import decode_request, split_body
from seqserve.rest.wire import peek_request_id

log = logging.getLogger(__name__)

INLINE_JSON_BYTES = 1 << 20
INLINE_BINARY_BYTES = 4 << 20
# Large JSON bodies decoded at once; more wait for a worker (the body limit bounds each one's memory).
JSON_WORKERS = 1
# Seconds a worker may take over one body (a 61 MiB body takes ~5 s on a loaded 2-core machine).
WORKER_TIMEOUT = 120.0


class DecodeFailed(Exception):
    """A body that could not be decoded: the client's error, and the request id for the log."""

    def __init__(self, error: SeqserveError, request_id: str | None) -> None:
        super().__init__(str(error))
        self.error, self.request_id = error, request_id

    def __reduce__(self) -> tuple[type[DecodeFailed], tuple[SeqserveError, str | None]]:
        return DecodeFailed, (self.error, self.request_id)  # it crosses from the worker process


def decode_body(body: bytes, header_length: str | None, name: str, version: str | None) -> InferRequest:
    """The request in a REST body; raises DecodeFailed."""
    header = b""
    try:
        header, binary = split_body(body, header_length)
        return decode_request(header, binary, name, version)
    except SeqserveError as e:
        raise DecodeFailed(e, peek_request_id(header)) from None


class BodyDecoder:
    """Decodes bodies inline, on a thread or in a worker process, by size (module docstring)."""

    def __init__(self) -> None:
        self._workers: asyncio.Semaphore | None = None  # made on the event loop that uses it

    async def decode(self, body: bytes, header_length: str | None, name: str, version: str | None) -> InferRequest:
        json_bytes = _json_length(body, header_length)
        if json_bytes > INLINE_JSON_BYTES:
            return await self._in_process(body, header_length, name, version)
        if len(body) - json_bytes > INLINE_BINARY_BYTES:
            return await asyncio.to_thread(decode_body, body, header_length, name, version)
        return decode_body(body, header_length, name, version)

    async def _in_process(self, body: bytes, header_length: str | None, name: str, version: str | None) -> InferRequest:
        if self._workers is None:
            self._workers = asyncio.Semaphore(JSON_WORKERS)
        async with self._workers:
            # On a thread: the copies of tens of megabytes into and out of the pipe and the pickles
            # would hold the event loop for ~100 ms if made on it.
            result = await asyncio.to_thread(_decode_in_worker, body, header_length, name, version)
        if isinstance(result, DecodeFailed):
            raise result
        return result


def _decode_in_worker(body: bytes, header_length: str | None, name: str, version: str | None) -> object:
    """The InferRequest, or the DecodeFailed, that a fresh worker process made of `body`.

    A fresh interpreter per body (~0.5 s to start, small beside decoding megabytes of JSON):
    nothing of the server is inherited, and the decode's heap ends with it.
    """
    job = pickle.dumps((body, header_length, name, version), protocol=pickle.HIGHEST_PROTOCOL)
    command = [sys.executable, "-m", "seqserve.rest.decode_worker"]
    try:
        worker = subprocess.run(command, input=job, capture_output=True, env=_worker_env(), timeout=WORKER_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        worker = None
    if worker is None or worker.returncode != 0 or not worker.stdout:
        if worker is not None:
            log.warning("decoding a request body in a worker process failed: %s", worker.stderr[-2000:])
        busy = ModelNotReady("the server could not decode this request body; send it again", retry_after=1.0)
        return DecodeFailed(busy, None)
    return pickle.loads(worker.stdout)  # noqa: S301 - written by our own worker, from the body we gave it


def _worker_env() -> dict[str, str]:
    """The server's environment, with this package importable however the server was started."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}


def _json_length(body: bytes, header_length: str | None) -> int:
    """Bytes of the JSON part, as far as can be told cheaply (split_body checks the header properly)."""
    if header_length is None:
        return len(body)
    try:
        return min(max(int(header_length), 0), len(body))
    except ValueError:
        return 0
