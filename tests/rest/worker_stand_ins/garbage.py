"""A decode worker that answers with bytes that are no result."""

import sys

sys.stdin.buffer.read()
sys.stdout.buffer.write(b"\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00not a pickle")
