"""V2 REST request bodies -> `seqserve.inference.InferRequest`: JSON tensors and binary tensor data.

Tensors are decoded with NumPy only: `np.frombuffer` for binary data, `np.asarray` for JSON lists;
every mismatch is an InvalidInput naming the tensor and what was expected.
"""

from __future__ import annotations

import math

import numpy as np

from seqserve import raw_tensors
from seqserve.datatypes import to_numpy_dtype
from seqserve.errors import InvalidInput
from seqserve.inference import InferRequest, RequestedOutput, Tensor
from seqserve.rest.binary_extension import (
    BINARY_DATA,
    BINARY_DATA_OUTPUT,
    BINARY_DATA_SIZE,
    HEADER_LENGTH,
)
from seqserve.rest.wire import InferRequestHeader, RequestInput, parse_header
from seqserve.shapes import check_shape

# Which kinds of JSON numbers each kind of tensor takes: ints into floats yes, floats into ints never.
_JSON_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}
_KIND_WORDS = {"f": "floats", "i": "integers", "u": "integers", "b": "booleans", "U": "strings", "O": "mixed values"}
# Extensions seqserve does not implement; silently ignoring them would return the wrong thing.
_UNSUPPORTED_OUTPUT_PARAMETERS = {
    "classification": "the classification extension",
    "shared_memory_region": "the shared memory extension",
}


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON head and the binary tail of a body, as the `Inference-Header-Content-Length` header says."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInput(f"header {HEADER_LENGTH} must be a byte count, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise InvalidInput(
            f"header {HEADER_LENGTH} is {length}, but the body has {len(body)} bytes; "
            f"expected a JSON header length between 1 and {len(body)}"
        )
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def decode_request(header: bytes, binary: memoryview, model_name: str, model_version: str | None) -> InferRequest:
    """The protocol-neutral request of a V2 REST body (JSON head already split from binary tail)."""
    wire = parse_header(header)
    inputs = _decode_inputs(wire, binary)
    parameters = dict(wire.parameters or {})
    binary_default = _flag(parameters.get(BINARY_DATA_OUTPUT, False), f"request parameter '{BINARY_DATA_OUTPUT}'")
    outputs = None
    if wire.outputs is not None:
        outputs = []
        for out in wire.outputs:
            params = dict(out.parameters or {})
            for key, what in _UNSUPPORTED_OUTPUT_PARAMETERS.items():
                if key in params:
                    raise InvalidInput(f"output '{out.name}': parameter '{key}' ({what}) is not supported by seqserve")
            params[BINARY_DATA] = _flag(params.get(BINARY_DATA, binary_default), f"output '{out.name}' '{BINARY_DATA}'")
            outputs.append(RequestedOutput(out.name, params))
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        id=wire.id,
        inputs=inputs,
        outputs=outputs,
        parameters=parameters,
    )


def _decode_inputs(wire: InferRequestHeader, binary: memoryview) -> list[Tensor]:
    tensors = []
    offset = 0
    for item in wire.inputs:
        params = dict(item.parameters or {})
        size = params.pop(BINARY_DATA_SIZE, None)
        _check_shape(item)
        if size is not None:
            if item.data is not None:
                raise InvalidInput(f"input '{item.name}' has both JSON 'data' and '{BINARY_DATA_SIZE}'; send one")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"input '{item.name}': '{BINARY_DATA_SIZE}' must be a byte count, got {size!r}")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input '{item.name}' declares {BINARY_DATA_SIZE} {size} at offset {offset}, but only "
                    f"{len(binary) - offset} binary bytes follow the JSON header"
                    + ("" if binary else f" (is the {HEADER_LENGTH} header missing?)")
                )
            data = _from_binary(item, binary[offset : offset + size])
            offset += size
        elif item.data is not None:
            data = _from_json(item)
        else:
            raise InvalidInput(f"input '{item.name}' has no data: give 'data' or '{BINARY_DATA_SIZE}'")
        tensors.append(Tensor(item.name, item.datatype, data, params))
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary)} binary bytes follow the JSON header, but the inputs' {BINARY_DATA_SIZE} add up to {offset}"
        )
    return tensors


def _check_shape(item: RequestInput) -> None:
    check_shape(item.name, item.shape)


def _numpy_dtype(item: RequestInput) -> np.dtype:
    try:
        return to_numpy_dtype(item.datatype)
    except InvalidInput as e:
        raise InvalidInput(f"input '{item.name}': {e}") from None


def _from_binary(item: RequestInput, raw: memoryview) -> np.ndarray:
    return raw_tensors.decode(item.name, item.datatype, item.shape, raw, medium="binary data")


def _from_json(item: RequestInput) -> np.ndarray:
    dtype = _numpy_dtype(item)
    count = math.prod(item.shape)
    if item.datatype == "BYTES":
        return _strings(item, count)
    try:
        values = np.asarray(item.data)
    except ValueError:
        raise InvalidInput(f"input '{item.name}': 'data' is not a rectangular list of numbers") from None
    if dtype.kind in "iu" and values.dtype.kind in "fO":
        # NumPy turns [2**64 - 1, 1] into float64: look again at the Python values before calling them floats.
        values = _exact_integers(item, dtype, values)
    if values.size != count:
        raise _count_mismatch(item, values.size, count)
    if count and values.dtype.kind not in _JSON_KINDS[dtype.kind]:
        got = _KIND_WORDS.get(values.dtype.kind, str(values.dtype))
        raise InvalidInput(f"input '{item.name}' has {got} in 'data', which do not fit datatype {item.datatype}")
    if dtype.kind in "iu" and values.dtype.kind in "iu" and count and dtype != values.dtype:
        info = np.iinfo(dtype)
        low, high = values.min(), values.max()
        if low < info.min or high > info.max:
            raise InvalidInput(
                f"input '{item.name}' holds {low if low < info.min else high}, outside the range of {item.datatype}"
            )
    with np.errstate(over="ignore"):  # 1e39 into FP32 becomes inf, which the data plane rejects by name
        return values.astype(dtype, copy=False).reshape(item.shape)


def _exact_integers(item: RequestInput, dtype: np.dtype, values: np.ndarray) -> np.ndarray:
    """The JSON values as `dtype` if every one is an integer in its range; else `values` unchanged."""
    try:
        flat = np.array(item.data, dtype=object).ravel()
    except ValueError:
        return values
    info = np.iinfo(dtype)
    if not all(type(v) is int and info.min <= v <= info.max for v in flat):
        return values
    return np.array(flat.tolist(), dtype=dtype)


def _count_mismatch(item: RequestInput, given: int, expected: int) -> InvalidInput:
    return InvalidInput(f"input '{item.name}' has {given} values in 'data', expected {expected} for shape {item.shape}")


def _strings(item: RequestInput, count: int) -> np.ndarray:
    try:
        values = np.array(item.data, dtype=object).ravel()
    except ValueError:
        raise InvalidInput(f"input '{item.name}': 'data' is not a rectangular list of strings") from None
    if values.size != count:
        raise _count_mismatch(item, values.size, count)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise InvalidInput(f"input '{item.name}' (BYTES) element {i} is {type(value).__name__}, expected a string")
        values[i] = value.encode()
    return values.reshape(item.shape)


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be true or false, got {value!r}")
    return value
