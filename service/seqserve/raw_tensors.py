"""The V2 protocol's raw tensor layout, shared by gRPC `raw_*_contents` and REST's binary extension.

Row-major, little-endian, unpadded; a BYTES element is a 4-byte little-endian length followed by
that many bytes. Every byte and element count is checked here, so a client's mistake comes back as
an InvalidInput naming the tensor, never as a NumPy reshape error.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from seqserve.datatypes import V2_DATATYPES, to_numpy_dtype, unknown_datatype
from seqserve.errors import InvalidInput

LENGTH_PREFIX = struct.Struct("<I")

# The little-endian dtype of each fixed-size datatype, looked up on every tensor.
_WIRE_DTYPES: dict[str, np.dtype] = {
    name: to_numpy_dtype(name).newbyteorder("<") for name in V2_DATATYPES if name != "BYTES"
}


def decode(
    name: str, datatype: str, shape: list[int], raw: bytes | memoryview, medium: str, what: str = "input"
) -> np.ndarray:
    """One tensor from its raw bytes. `medium` and `what` word the errors ("binary data", "state")."""
    wire = _WIRE_DTYPES.get(datatype)
    count = math.prod(shape)
    if wire is None:
        if datatype == "BYTES":
            return _decode_bytes(name, shape, count, raw, medium, what)
        raise InvalidInput(f"{what} '{name}': {unknown_datatype(datatype).message}")
    expected = count * wire.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"{what} '{name}' has {len(raw)} bytes of {medium}, expected {expected} "
            f"({count} {datatype} elements of {wire.itemsize} bytes for shape {shape})"
        )
    array = np.frombuffer(raw, dtype=wire, count=count)
    if not array.dtype.isnative or not array.flags.aligned:
        # ONNX Runtime wants aligned native-order buffers; a REST body's JSON head leaves the tensors at any offset.
        array = array.astype(wire.newbyteorder("="))
    return array.reshape(shape)


def _decode_bytes(
    name: str, shape: list[int], count: int, raw: bytes | memoryview, medium: str, what: str
) -> np.ndarray:
    # Elements are collected as found, never allocated from the declared shape: a shape of [10**9]
    # must not cost gigabytes before the data is seen to be four bytes long.
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw) and len(elements) < count:
        if offset + LENGTH_PREFIX.size > len(raw):
            raise InvalidInput(
                f"{what} '{name}' (BYTES) ends after {len(elements)} of {count} elements, inside an element's "
                "4-byte length (each element is a 4-byte little-endian length followed by that many bytes)"
            )
        (length,) = LENGTH_PREFIX.unpack_from(raw, offset)
        offset += LENGTH_PREFIX.size
        if offset + length > len(raw):
            raise InvalidInput(
                f"{what} '{name}' (BYTES) element {len(elements)} declares {length} bytes, but only "
                f"{len(raw) - offset} remain: it runs past the end of the {medium}"
            )
        elements.append(bytes(raw[offset : offset + length]))
        offset += length
    if len(elements) < count:
        raise InvalidInput(
            f"{what} '{name}' has {len(elements)} BYTES elements, expected {count} for shape {shape}: "
            f"{len(raw)} bytes of {medium} are too few for {count} elements"
        )
    if offset != len(raw):
        raise InvalidInput(
            f"{what} '{name}' (BYTES) has {len(raw) - offset} bytes left over after its {count} elements "
            f"(shape {shape})"
        )
    array = np.empty(count, dtype=np.object_)
    array[:] = elements
    return array.reshape(shape)


def encode(datatype: str, data: np.ndarray) -> bytes:
    """The raw bytes of a tensor, the layout `decode` reads."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for element in data.reshape(-1):
            encoded = element.encode() if isinstance(element, str) else bytes(element)
            parts += (LENGTH_PREFIX.pack(len(encoded)), encoded)
        return b"".join(parts)
    wire = _WIRE_DTYPES.get(datatype)
    if wire is None:
        raise unknown_datatype(datatype)
    return (data if data.dtype == wire else data.astype(wire)).tobytes()  # tobytes writes row-major
