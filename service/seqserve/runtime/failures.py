"""ONNX Runtime's exceptions -> the error table.

ORT raises its own exception classes with texts like `[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :
Non-zero status code returned while running Gather node. Name:'emb' Status Message: /src/...cc:123
indices element out of data bounds, idx=15 ...`. A request passes validation before it gets here,
so an input ORT still refuses (INVALID_ARGUMENT) is the request's fault: 400, naming the node and
what it said. A run that cannot get its memory is the request's size: 413. Anything else is ours.
"""

from __future__ import annotations

import re

from seqserve.errors import InferenceFailed, InvalidInput, PayloadTooLarge, SeqserveError

_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*([A-Z_]+)\s*:\s*")
_NODE = re.compile(r"Non-zero status code returned while running (\S+) node\. Name:'([^']*)' Status Message:\s*")
# ORT prefixes some messages with the source file and function that raised them.
_SOURCE = re.compile(r"\S+\.(?:cc|h|cpp|cu):\d+\s+(?:\S+\s+)?(?=\S)")
_OUT_OF_MEMORY = ("Failed to allocate memory", "bad_alloc", "out of memory")


def ort_failure(error: Exception) -> SeqserveError:
    """The error a client gets for `error`, raised by an ORT run of a validated request."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    match = _PREFIX.match(text)
    code = match.group(1) if match else type(error).__name__.upper()
    message = text[match.end() :] if match else text
    node = _NODE.search(message)
    if node:
        op, name = node.groups()
        detail = _SOURCE.sub("", message[node.end() :], count=1).strip()
        message = f"node {op}" + (f" '{name}'" if name else "") + f": {detail}"
    if any(sign in text for sign in _OUT_OF_MEMORY):
        return PayloadTooLarge(f"the request needs more memory than the model could allocate ({message})")
    if code == "INVALID_ARGUMENT":
        return InvalidInput(f"the model refused this request's inputs: {message}")
    return InferenceFailed(f"ONNX Runtime failed: {message}")
