"""KServe V2 tensor datatypes and their NumPy counterparts."""

from __future__ import annotations

import numpy as np

from seqserve.errors import InvalidInput

_V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_NUMPY_TO_V2: dict[np.dtype, str] = {v: k for k, v in _V2_TO_NUMPY.items()}
V2_DATATYPES: tuple[str, ...] = tuple(_V2_TO_NUMPY)


def to_numpy_dtype(datatype: str) -> np.dtype:
    """The NumPy dtype of a V2 datatype name such as ``FP32``."""
    try:
        return _V2_TO_NUMPY[datatype]
    except KeyError:
        raise unknown_datatype(datatype) from None


def unknown_datatype(datatype: str) -> InvalidInput:
    return InvalidInput(f"unknown datatype {datatype!r}; expected one of {', '.join(_V2_TO_NUMPY)}")


def to_v2_datatype(dtype: np.dtype) -> str:
    """The V2 datatype name of a NumPy dtype (strings and bytes map to ``BYTES``)."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return _NUMPY_TO_V2[dtype]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no KServe V2 datatype") from None


def element_size(datatype: str) -> int:
    """Bytes per element in the binary tensor encoding (BYTES has no fixed size: 0)."""
    if datatype == "BYTES":
        return 0
    return to_numpy_dtype(datatype).itemsize
