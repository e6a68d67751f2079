"""`seqserve.inference.InferResponse` -> a V2 REST response body: JSON outputs, or binary ones after the JSON."""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic_core

from seqserve import raw_tensors
from seqserve.errors import InvalidInput
from seqserve.inference import InferRequest, InferResponse, Tensor
from seqserve.rest.binary_extension import (
    BINARY_DATA,
    BINARY_DATA_OUTPUT,
    BINARY_DATA_SIZE,
    BINARY_TYPE,
    HEADER_LENGTH,
    JSON_TYPE,
)

# Values encoded by one call: ~1.5 ms each here. Answers of more values than INLINE_ELEMENTS are
# encoded on a thread (a 16-million-value answer took 3 s in one piece, holding the event loop).
JSON_PIECE_ELEMENTS = 1 << 16
INLINE_ELEMENTS = 1 << 18


def encode_response(request: InferRequest, response: InferResponse) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a V2 REST response; outputs asked for as binary go after the JSON.

    JSON data is encoded in pieces of JSON_PIECE_ELEMENTS values: each piece's C calls are short,
    so a large answer encoded on a thread (`encode_answer`) leaves the GIL, and so the event loop,
    free between pieces. The text is the same as encoding the whole list at once.
    """
    binary_default = bool(request.parameters.get(BINARY_DATA_OUTPUT, False))
    as_binary = {out.name: out.parameters.get(BINARY_DATA, binary_default) for out in request.outputs or []}
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    # The answer's parts, joined once at the end: bytes.join copies without the GIL, `+` does not.
    parts = [_json(document)[:-1], b',"outputs":[']
    blobs: list[bytes] = []
    for n, tensor in enumerate(response.outputs):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if n:
            parts.append(b",")
        if as_binary.get(tensor.name, binary_default):
            blob = raw_tensors.encode(tensor.datatype, tensor.data)
            entry["parameters"] = {BINARY_DATA_SIZE: len(blob)}
            blobs.append(blob)
            parts.append(_json(entry))
        else:
            parts += [_json(entry)[:-1], b',"data":', *_json_array(tensor), b"}"]
    parts.append(b"]}")
    if not blobs:
        return b"".join(parts), {"content-type": JSON_TYPE}
    head_length = sum(len(part) for part in parts)
    return b"".join([*parts, *blobs]), {"content-type": BINARY_TYPE, HEADER_LENGTH: str(head_length)}


async def encode_answer(request: InferRequest, response: InferResponse) -> tuple[bytes, dict[str, str]]:
    """`encode_response`, on a thread when the answer is large enough (~10 ms and up to encode)
    to hold the event loop."""
    if sum(tensor.data.size for tensor in response.outputs) > INLINE_ELEMENTS:
        return await asyncio.to_thread(encode_response, request, response)
    return encode_response(request, response)


def _json(value: Any) -> bytes:
    # pydantic-core's serializer is ~6x faster than the json module on long float lists.
    return pydantic_core.to_json(value, inf_nan_mode="constants")


def _json_array(tensor: Tensor) -> list[bytes]:
    """The tensor's data as a JSON array, in parts."""
    flat = tensor.data.ravel()
    if tensor.datatype == "BYTES" or flat.size <= JSON_PIECE_ELEMENTS:
        return [_json(_to_json_data(tensor))]
    parts = [b"["]
    for start in range(0, flat.size, JSON_PIECE_ELEMENTS):
        if start:
            parts.append(b",")
        parts.append(_json(flat[start : start + JSON_PIECE_ELEMENTS].tolist())[1:-1])
    parts.append(b"]")
    return parts


def _to_json_data(tensor: Tensor) -> list[Any]:
    if tensor.datatype != "BYTES":
        return tensor.data.ravel().tolist()
    values = []
    for value in tensor.data.ravel():
        if isinstance(value, str):
            values.append(value)
            continue
        try:
            values.append(bytes(value).decode())
        except UnicodeDecodeError:
            raise InvalidInput(
                f"output '{tensor.name}' holds bytes that are not UTF-8 text; ask for it with '{BINARY_DATA}': true"
            ) from None
    return values
