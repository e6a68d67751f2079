"""The bytes between the server and a decode worker process (`seqserve.rest.decode_offload`).

Both directions carry tens of megabytes, and every copy the server makes of them while holding the
GIL stops its event loop (a 64 MiB copy is ~30 ms here). So nothing large is pickled or joined:

- job: one JSON line (header length, model, version, body size), then the body's bytes as they are;
- result: the pickled object with its NumPy data taken out of band (pickle protocol 5), then each
  buffer behind its length. The server reads each buffer straight into a fresh array: the pipe's
  reads release the GIL, and the unpickled tensors are views of those arrays, not copies.
"""

from __future__ import annotations

import json
import pickle
import struct
from typing import BinaryIO

import numpy as np

_COUNTS = struct.Struct("<QI")  # pickle's length, number of out-of-band buffers
_LENGTH = struct.Struct("<Q")


class WorkerPipeBroken(Exception):
    """The other end closed before a whole job or result crossed (a worker that crashed or was killed)."""


def send_job(stream: BinaryIO, body: bytes, header_length: str | None, name: str, version: str | None) -> None:
    head = {"header_length": header_length, "name": name, "version": version, "bytes": len(body)}
    stream.write(json.dumps(head).encode() + b"\n")
    stream.write(body)
    stream.flush()


def read_job(stream: BinaryIO) -> tuple[bytes, str | None, str, str | None]:
    """(body, header length, model name, version), as `send_job` wrote them."""
    head = json.loads(stream.readline())
    body = _read_exactly(stream, head["bytes"])
    return bytes(body), head["header_length"], head["name"], head["version"]


def send_result(stream: BinaryIO, result: object) -> None:
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(result, protocol=5, buffer_callback=buffers.append)
    stream.write(_COUNTS.pack(len(head), len(buffers)))
    stream.write(head)
    for buffer in buffers:
        raw = buffer.raw()
        stream.write(_LENGTH.pack(raw.nbytes))
        stream.write(raw)
    stream.flush()


def read_result(stream: BinaryIO) -> object:
    """The object `send_result` wrote; its arrays own the memory they were read into."""
    size, count = _COUNTS.unpack(_read_exactly(stream, _COUNTS.size))
    head = _read_exactly(stream, size).tobytes()
    buffers = [_read_exactly(stream, _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))[0]) for _ in range(count)]
    return pickle.loads(head, buffers=buffers)  # noqa: S301 - written by our own worker, from a body we gave it


def _read_exactly(stream: BinaryIO, size: int) -> np.ndarray:
    # np.empty, not bytearray: zeroing 64 MiB would hold the GIL; the pages are filled by the kernel.
    target = np.empty(size, np.uint8)
    view, done = memoryview(target), 0
    while done < size:
        got = stream.readinto(view[done:])
        if not got:
            raise WorkerPipeBroken(f"the pipe closed after {done} of {size} bytes")
        done += got
    return target
