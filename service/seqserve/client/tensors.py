"""NumPy arrays to and from KServe V2 bodies, tensors in the binary data extension.

Binary, not JSON: the bytes go as they are (float32 stays exact, and nothing is printed and parsed).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from seqserve.datatypes import V2_DATATYPES, to_numpy_dtype, to_v2_datatype
from seqserve.errors import InvalidInput
from seqserve.rest.binary_extension import HEADER_LENGTH

# Numbers only: BYTES tensors are not sent in the binary layout this client writes.
_NUMERIC_KINDS = "biuf"


def datatype_of(array: np.ndarray) -> str:
    if array.dtype.kind in _NUMERIC_KINDS:
        with contextlib.suppress(InvalidInput):
            return to_v2_datatype(array.dtype)
    numeric = [name for name in V2_DATATYPES if name != "BYTES"]
    raise TypeError(f"arrays of dtype {array.dtype} have no V2 datatype; use one of {numeric}")


def encode_request(
    inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None, parameters: Mapping[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """A V2 inference request body with binary inputs, asking for binary outputs; and its headers."""
    arrays = {name: np.ascontiguousarray(value) for name, value in inputs.items()}
    described = [
        {"name": name, "datatype": datatype_of(a), "shape": list(a.shape), "parameters": {"binary_data_size": a.nbytes}}
        for name, a in arrays.items()
    ]
    head: dict[str, Any] = {"inputs": described, "parameters": dict(parameters)}
    if outputs is not None:
        head["outputs"] = [{"name": name, "parameters": {"binary_data": True}} for name in outputs]
    else:
        head["parameters"]["binary_data_output"] = True
    header = json.dumps(head).encode()
    body = b"".join([header, *(a.tobytes() for a in arrays.values())])
    return body, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def decode_response(content: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(the response's JSON head, its tensors by name), with JSON or binary data."""
    size = len(content) if header_length is None else int(header_length)
    head = json.loads(content[:size])
    tensors, offset = {}, size
    for tensor in head.get("outputs", []):
        dtype = to_numpy_dtype(tensor["datatype"])
        binary = tensor.get("parameters", {}).get("binary_data_size")
        if binary is None:
            array = np.asarray(tensor["data"], dtype=dtype)
        else:
            array = np.frombuffer(content, dtype, int(binary) // dtype.itemsize, offset).copy()
            offset += int(binary)
        tensors[tensor["name"]] = array.reshape(tensor["shape"])
    return head, tensors
