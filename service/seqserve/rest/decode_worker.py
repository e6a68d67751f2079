"""A worker process that decodes one large REST body (`seqserve.rest.decode_offload`).

Reads a pickled (body, header length, model name, version) from stdin, writes the pickled
InferRequest, or the DecodeFailed that says why not, to stdout, and exits.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys

from seqserve.rest.decode_offload import DecodeFailed, decode_body


def main() -> int:
    # Background work: the server's event loop (health probes, streamed steps) gets the CPU first.
    with contextlib.suppress(OSError):
        os.nice(10)
    body, header_length, name, version = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - from the server
    try:
        result: object = decode_body(body, header_length, name, version)
    except DecodeFailed as e:
        result = e
    del body
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
