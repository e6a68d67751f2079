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
import contextlib
import fcntl
import logging
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import threading

from seqserve.errors import ModelNotReady, SeqserveError
from seqserve.inference import InferRequest
from seqserve.rest.decode import decode_request, split_body
from seqserve.rest.wire import peek_request_id
from seqserve.rest.worker_pipe import WorkerPipeBroken, read_result, send_job

log = logging.getLogger(__name__)

INLINE_JSON_BYTES = 1 << 20
INLINE_BINARY_BYTES = 4 << 20
# Large JSON bodies decoded at once; more wait for a worker (the body limit bounds each one's memory).
JSON_WORKERS = 1
# Seconds a worker may take over one body (a 61 MiB body takes ~5 s on a loaded 2-core machine).
WORKER_TIMEOUT = 120.0
PIPE_BYTES = 1 << 20
WORKER_MODULE = "seqserve.rest.decode_worker"


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
            # On a thread: moving tens of megabytes through the pipes takes ~100 ms.
            result = await asyncio.to_thread(_decode_in_worker, body, header_length, name, version)
        if isinstance(result, DecodeFailed):
            raise result
        return result


def _decode_in_worker(body: bytes, header_length: str | None, name: str, version: str | None) -> object:
    """The InferRequest, or the DecodeFailed, that a fresh worker process made of `body`.

    A fresh interpreter per body (~0.5 s to start, small beside decoding megabytes of JSON):
    nothing of the server is inherited, and the decode's heap ends with it. The bytes cross as
    `worker_pipe` says, so that this thread holds the GIL for no large copy.
    """
    command = [sys.executable, "-m", WORKER_MODULE]
    with tempfile.TemporaryFile() as errors:
        try:
            worker = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, env=_worker_env(), bufsize=0
            )
        except OSError as e:
            log.warning("could not start a worker process to decode a request body: %s", e)
            return _busy()
        watchdog = threading.Timer(WORKER_TIMEOUT, worker.kill)
        watchdog.start()
        try:
            with worker:
                _widen_pipes(worker)
                try:
                    send_job(worker.stdin, body, header_length, name, version)
                    worker.stdin.close()
                    return read_result(worker.stdout)
                except (OSError, WorkerPipeBroken, pickle.UnpicklingError, struct.error, ValueError) as e:
                    worker.kill()
                    failure = e
        finally:
            watchdog.cancel()
        errors.seek(0)
        log.warning(
            "decoding a request body in a worker process failed (%s, exit code %s): %s",
            failure, worker.returncode, errors.read()[-2000:].decode(errors="replace"),
        )  # fmt: skip
        return _busy()


def _busy() -> DecodeFailed:
    busy = ModelNotReady("the server could not decode this request body; send it again", retry_after=1.0)
    return DecodeFailed(busy, None)


def _widen_pipes(worker: subprocess.Popen[bytes]) -> None:
    """1 MiB pipes instead of 64 KiB: 16 times fewer wake-ups to move a body across (Linux only)."""
    for stream in (worker.stdin, worker.stdout):
        with contextlib.suppress(AttributeError, OSError):
            fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


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
