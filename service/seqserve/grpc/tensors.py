"""Tensor data on the gRPC wire <-> NumPy: raw contents (`seqserve.raw_tensors`, the layout REST's
binary extension shares) and the typed `InferTensorContents` fields.

Kept apart from the message mapping in `converters` because this is where every element count is
checked: a wrong count is the client's mistake and must come back as an InvalidInput naming the
tensor, never as a NumPy reshape error.
"""

from __future__ import annotations

import math

import numpy as np

from seqserve import raw_tensors
from seqserve.datatypes import to_numpy_dtype
from seqserve.errors import InvalidInput
from seqserve.grpc.generated import grpc_service_pb2 as pb

# The InferTensorContents field that carries each datatype. 8- and 16-bit integers travel widened
# to 32 bits (there are no narrower protobuf integers); FP16 has no field and travels raw only.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def element_count(shape: list[int]) -> int:
    # Python integers: NumPy's int64 product wraps ([2**32, 2**32] would count 0 elements).
    return math.prod(shape)


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes, what: str = "input") -> np.ndarray:
    """Decodes one entry of raw_input_contents (or raw_state_contents)."""
    return raw_tensors.decode(name, datatype, shape, raw, medium="raw contents", what=what)


def from_contents(name: str, datatype: str, shape: list[int], contents: pb.InferTensorContents) -> np.ndarray:
    """Decodes an input's typed contents; the only field used must be the one of its datatype."""
    dtype = _numpy_dtype(name, datatype)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input '{name}' is {datatype}, which has no typed contents field: send it as raw contents")
    used = [descriptor.name for descriptor, _ in contents.ListFields()]
    wrong = [f for f in used if f != field]
    if wrong:
        raise InvalidInput(f"input '{name}' is {datatype}, so its values belong in {field}, not in {', '.join(wrong)}")
    values = getattr(contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidInput(f"input '{name}' has {len(values)} values in {field}, expected {count} for shape {shape}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=np.object_)
        array[:] = list(values)
        return array.reshape(shape)
    if dtype.kind in "iu" and dtype.itemsize < 4:
        # Narrow integers arrive widened to 32 bits: narrowing must not wrap a value silently.
        wide = np.asarray(values, dtype=np.int64)
        array = wide.astype(dtype)
        if not np.array_equal(array, wide):
            raise InvalidInput(f"input '{name}' holds values outside the range of {datatype}")
    else:
        array = np.asarray(values, dtype=dtype)
    return array.reshape(shape)


def _numpy_dtype(name: str, datatype: str) -> np.dtype:
    try:
        return to_numpy_dtype(datatype)
    except InvalidInput as e:
        raise InvalidInput(f"input '{name}': {e.message}") from None


def to_raw(datatype: str, data: np.ndarray) -> bytes:
    """Encodes an output for raw_output_contents, the layout from_raw reads."""
    return raw_tensors.encode(datatype, data)
