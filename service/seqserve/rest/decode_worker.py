"""A worker process that decodes one large REST body (`seqserve.rest.decode_offload`).

Reads one job from stdin, writes the InferRequest, or the DecodeFailed that says why not, to
stdout (both as `seqserve.rest.worker_pipe` frames them), and exits.
"""

from __future__ import annotations

import contextlib
import os
import sys

from seqserve.rest.decode_offload import DecodeFailed, decode_body
from seqserve.rest.worker_pipe import read_job, send_result


def main() -> int:
    # Background work: the server's event loop (health probes, streamed steps) gets the CPU first.
    with contextlib.suppress(OSError):
        os.nice(10)
    body, header_length, name, version = read_job(sys.stdin.buffer)
    try:
        result: object = decode_body(body, header_length, name, version)
    except DecodeFailed as e:
        result = e
    del body
    send_result(sys.stdout.buffer, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
