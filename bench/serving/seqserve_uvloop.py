"""`seqserve` run on uvloop instead of asyncio's default loop, without touching the service.

The benchmark's "on-uvloop" configuration: it measures what a one-line change in
seqserve/server.py (installing uvloop when it is importable) would buy under the same load.

    python -m serving.seqserve_uvloop serve --store ...   (the arguments of `seqserve`)
"""

from __future__ import annotations

import sys

import uvloop


def main() -> int:
    uvloop.install()  # asyncio.run in seqserve.cli now makes a uvloop loop
    from seqserve.cli import main as seqserve_main

    return seqserve_main()


if __name__ == "__main__":
    sys.exit(main())
