"""Just enough of the protobuf wire format to read the few small messages of a SavedModel.

No `.proto` files, no generated classes: a message becomes a map from field number to the raw
values found for it (ints for varint/fixed fields, bytes for length-delimited ones). Malformed
input raises `WireError`.
"""

from __future__ import annotations

import struct

MAX_VARINT_BYTES = 10  # a 64-bit value in 7-bit groups


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at `pos`."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise WireError("truncated varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise WireError("varint longer than 10 bytes")


def signed64(value: int) -> int:
    """A varint-encoded int64 (negative numbers are ten-byte two's complement)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_message(data: bytes) -> dict[int, list[int | bytes]]:
    """Every field of one message, in order of appearance per field number."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        value: int | bytes
        if wire_type == 0:
            value, pos = read_varint(data, pos)
        elif wire_type == 1:
            if pos + 8 > end:
                raise WireError("truncated fixed64 field")
            (value,) = struct.unpack_from("<Q", data, pos)
            pos += 8
        elif wire_type == 5:
            if pos + 4 > end:
                raise WireError("truncated fixed32 field")
            (value,) = struct.unpack_from("<I", data, pos)
            pos += 4
        elif wire_type == 2:
            length, pos = read_varint(data, pos)
            if length > end - pos:
                raise WireError(f"field {number} declares {length:,} bytes, past the end of the message")
            value = bytes(data[pos : pos + length])
            pos += length
        else:
            raise WireError(f"unsupported wire type {wire_type} (field {number})")
        fields.setdefault(number, []).append(value)
    return fields


def first_int(fields: dict[int, list[int | bytes]], number: int, default: int = 0) -> int:
    """The last value of an integer field (protobuf's rule for repeated scalars), or `default`."""
    values = fields.get(number)
    if not values:
        return default
    value = values[-1]
    if not isinstance(value, int):
        raise WireError(f"field {number} is not an integer")
    return value


def first_bytes(fields: dict[int, list[int | bytes]], number: int, default: bytes = b"") -> bytes:
    """The last value of a length-delimited field, or `default`."""
    values = fields.get(number)
    if not values:
        return default
    value = values[-1]
    if not isinstance(value, bytes):
        raise WireError(f"field {number} is not length-delimited")
    return value


def all_bytes(fields: dict[int, list[int | bytes]], number: int) -> list[bytes]:
    """Every value of a repeated message/string field."""
    out = []
    for value in fields.get(number, []):
        if not isinstance(value, bytes):
            raise WireError(f"field {number} is not length-delimited")
        out.append(value)
    return out
