"""`seqserve.inference.InferResponse` -> a V2 REST response body: JSON outputs, or binary ones after the JSON."""

from __future__ import annotations

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


def encode_response(request: InferRequest, response: InferResponse) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a V2 REST response; outputs asked for as binary go after the JSON."""
    binary_default = bool(request.parameters.get(BINARY_DATA_OUTPUT, False))
    as_binary = {out.name: out.parameters.get(BINARY_DATA, binary_default) for out in request.outputs or []}
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if as_binary.get(tensor.name, binary_default):
            blob = raw_tensors.encode(tensor.datatype, tensor.data)
            entry["parameters"] = {BINARY_DATA_SIZE: len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _to_json_data(tensor)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    document["outputs"] = outputs
    # pydantic-core's serializer is ~6x faster than the json module on long float lists.
    head = pydantic_core.to_json(document, inf_nan_mode="constants")
    if not blobs:
        return head, {"content-type": JSON_TYPE}
    return b"".join([head, *blobs]), {"content-type": BINARY_TYPE, HEADER_LENGTH: str(len(head))}


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
