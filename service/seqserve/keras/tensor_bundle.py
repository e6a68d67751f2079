"""Read a TensorFlow tensor bundle (a SavedModel's `variables/`) without TensorFlow.

`variables.index` is a LevelDB-format table (sorted, prefix-compressed keys in blocks with restart
points; an index block and a 48-byte footer ending in a magic number) mapping each checkpoint key
to a BundleEntryProto: dtype, shape, shard, offset, size, CRC32C. The values are raw little-endian
bytes in `variables.data-NNNNN-of-MMMMM`. Anything malformed raises `BundleError`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqserve.keras.protowire import WireError, first_bytes, first_int, parse_message, read_varint, signed64

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5  # compression type + masked CRC32C
MAX_INDEX_BYTES = 64 * 2**20
MAX_SHARDS = 10_000
MAX_DIMENSIONS = 32
# CRC32C is computed in pure Python (no TensorFlow, no C extension): every index block is checked,
# and a tensor's bytes up to this size; larger tensors are checked for size and bounds only.
MAX_CHECKSUMMED_TENSOR_BYTES = 4 * 2**20

DT_FLOAT = 1
DT_STRING = 7
_DTYPE_NAMES = {
    1: "float32",
    2: "float64",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    9: "int64",
    10: "bool",
    14: "bfloat16",
    19: "float16",
}


class BundleError(ValueError):
    """The tensor bundle is malformed (the message says what and where)."""


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives in the data shards (a BundleEntryProto)."""

    key: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int
    sliced: bool

    @property
    def dtype_name(self) -> str:
        return _DTYPE_NAMES.get(self.dtype, f"DataType {self.dtype}")


# ------------------------------------------------------------------------------------------ CRC32C


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def unmask(masked: int) -> int:
    """LevelDB/TensorFlow store CRCs rotated and offset ("masked") so CRCs of CRCs stay strong."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------------- table


def _handle(data: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = read_varint(data, pos)
    size, pos = read_varint(data, pos)
    return offset, size, pos


def _block(table: bytes, offset: int, size: int, what: str) -> bytes:
    """The contents of one block, its bounds and checksum checked."""
    limit = len(table) - FOOTER_BYTES
    if offset < 0 or size < 0 or offset + size + BLOCK_TRAILER_BYTES > limit:
        raise BundleError(f"{what} at offset {offset:,} size {size:,} lies outside the file ({len(table):,} bytes)")
    contents = table[offset : offset + size]
    kind = table[offset + size]
    (stored,) = struct.unpack_from("<I", table, offset + size + 1)
    if unmask(stored) != crc32c(contents + bytes([kind])):
        raise BundleError(f"{what} at offset {offset:,} fails its checksum")
    if kind != 0:
        name = {1: "snappy", 2: "zlib"}.get(kind, f"type {kind}")
        raise BundleError(f"{what} is compressed ({name}); only uncompressed tables are read")
    return contents


def _block_entries(block: bytes, what: str) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of one block, keys rebuilt from their shared prefixes."""
    if len(block) < 4:
        raise BundleError(f"{what} is shorter than its restart count")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if restarts < 1 or end < 0:
        raise BundleError(f"{what} declares {restarts:,} restart points, more than it holds")
    out: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < end:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        length, pos = read_varint(block, pos)
        if shared > len(key) or unshared > end - pos or length > end - pos - unshared:
            raise BundleError(f"{what}: entry at {pos:,} runs past the block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        out.append((key, block[pos : pos + length]))
        pos += length
    return out


def read_table(table: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a LevelDB-format table held in memory."""
    if len(table) < FOOTER_BYTES:
        raise BundleError(f"{len(table)} bytes, shorter than a table footer ({FOOTER_BYTES})")
    footer = table[-FOOTER_BYTES:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_BYTES - 8)
    if magic != TABLE_MAGIC:
        raise BundleError(f"does not end in the table magic number (found {magic:#018x}); truncated?")
    _, _, pos = _handle(footer, 0)  # the metaindex block: no filters are written in a bundle
    index_offset, index_size, _ = _handle(footer, pos)
    entries: list[tuple[bytes, bytes]] = []
    index = _block(table, index_offset, index_size, "index block")
    for _, value in _block_entries(index, "index block"):
        offset, size, _ = _handle(value, 0)
        entries.extend(_block_entries(_block(table, offset, size, "data block"), "data block"))
    return entries


# ------------------------------------------------------------------------------------------ bundle


def _entry(key: str, value: bytes) -> BundleEntry:
    fields = parse_message(value)
    shape_fields = parse_message(first_bytes(fields, 2))
    if first_int(shape_fields, 3):
        raise BundleError(f"tensor {key!r} has an unknown rank")
    dims = []
    for dim in shape_fields.get(2, []):
        if not isinstance(dim, bytes):
            raise BundleError(f"tensor {key!r}: malformed shape")
        dims.append(signed64(first_int(parse_message(dim), 1)))
    if len(dims) > MAX_DIMENSIONS or any(d < 0 for d in dims):
        raise BundleError(f"tensor {key!r}: invalid shape {dims[:MAX_DIMENSIONS]}")
    return BundleEntry(
        key=key,
        dtype=first_int(fields, 1),
        shape=tuple(dims),
        shard=first_int(fields, 3),
        offset=signed64(first_int(fields, 4)),
        size=signed64(first_int(fields, 5)),
        crc32c=first_int(fields, 6),
        sliced=bool(fields.get(7)),
    )


class TensorBundle:
    """The entries of `<prefix>.index` and float32 reads from `<prefix>.data-*`."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        index = prefix.with_name(prefix.name + ".index")
        if not index.is_file():
            raise BundleError(f"no {index.name}")
        declared = index.stat().st_size
        if declared > MAX_INDEX_BYTES:
            raise BundleError(f"{index.name} is {declared:,} bytes, over the limit of {MAX_INDEX_BYTES:,}")
        try:
            rows = read_table(index.read_bytes())
        except (BundleError, WireError) as e:
            raise BundleError(f"{index.name}: {e}") from None
        try:
            header = parse_message(rows[0][1]) if rows and rows[0][0] == b"" else None
            if header is None:
                raise BundleError(f"{index.name} has no bundle header (the entry with the empty key)")
            self.shards = first_int(header, 1)
            if first_int(header, 2) != 0:
                raise BundleError(f"{index.name}: the tensors are big-endian")
            self.entries = {k.decode("utf-8"): _entry(k.decode("utf-8", "replace"), v) for k, v in rows[1:]}
        except (WireError, UnicodeDecodeError) as e:
            raise BundleError(f"{index.name}: malformed entry ({e})") from None
        if not 1 <= self.shards <= MAX_SHARDS:
            raise BundleError(f"{index.name}: {self.shards:,} data shards declared")

    def shard_path(self, shard: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard:05d}-of-{self.shards:05d}")

    def read_float32(self, key: str, max_bytes: int) -> np.ndarray:
        """The float32 tensor `key`, refused on its dtype, slicing, size or bounds before it is read."""
        entry = self.entries[key]
        if entry.dtype != DT_FLOAT:
            raise BundleError(f"tensor {key!r} is {entry.dtype_name}, not float32")
        expected = 4 * math.prod(entry.shape)
        if entry.size != expected:
            raise BundleError(
                f"tensor {key!r} of shape {list(entry.shape)} declares {entry.size:,} bytes, not {expected:,}"
            )
        raw = self._raw(entry, max_bytes)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(entry.shape)

    def read_string(self, key: str, max_bytes: int) -> bytes:
        """The scalar string tensor `key` (stored as its length, a CRC of the length, the bytes)."""
        entry = self.entries[key]
        if entry.dtype != DT_STRING or entry.shape != ():
            raise BundleError(f"tensor {key!r} is not a scalar string")
        raw = self._raw(entry, max_bytes, checksummed=False)
        try:
            length, pos = read_varint(raw, 0)
        except WireError:
            raise BundleError(f"tensor {key!r}: malformed string length") from None
        if length != len(raw) - pos - 4:
            raise BundleError(f"tensor {key!r}: string of {length:,} bytes in {len(raw):,}")
        # TensorFlow checksums a string tensor as its length (uint32), the length's CRC, the bytes.
        if unmask(entry.crc32c) != crc32c(struct.pack("<I", length & 0xFFFFFFFF) + raw[pos:]):
            raise BundleError(f"tensor {key!r} fails its checksum: {self.shard_path(entry.shard).name} is corrupt")
        return raw[pos + 4 :]

    def _raw(self, entry: BundleEntry, max_bytes: int, checksummed: bool = True) -> bytes:
        key = entry.key
        if entry.sliced:
            raise BundleError(f"tensor {key!r} is saved in slices (a partitioned variable)")
        if entry.size > max_bytes:
            raise BundleError(f"tensor {key!r} is {entry.size:,} bytes, over the limit of {max_bytes:,}")
        if not 0 <= entry.shard < self.shards:
            raise BundleError(f"tensor {key!r} is in shard {entry.shard}, of {self.shards}")
        shard = self.shard_path(entry.shard)
        if not shard.is_file():
            raise BundleError(f"tensor {key!r}: no data file {shard.name}")
        available = shard.stat().st_size
        if entry.offset < 0 or entry.offset + entry.size > available:
            raise BundleError(
                f"tensor {key!r} at offset {entry.offset:,} size {entry.size:,} lies outside "
                f"{shard.name} ({available:,} bytes)"
            )
        with open(shard, "rb") as f:
            f.seek(entry.offset)
            raw = f.read(entry.size)
        if len(raw) != entry.size:
            raise BundleError(f"tensor {key!r}: {shard.name} ended early")
        if checksummed and entry.size <= MAX_CHECKSUMMED_TENSOR_BYTES and unmask(entry.crc32c) != crc32c(raw):
            raise BundleError(f"tensor {key!r} fails its checksum: {shard.name} is corrupt")
        return raw
