"""The JSON shape of a V2 inference request, validated by pydantic at the wire.

Only the structure is validated here (names, shapes, datatypes, parameter maps); tensor `data` is
passed through untouched as `Any`, so a large JSON tensor costs one Rust parse and one NumPy
conversion, never a per-element pydantic check.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, StrictInt, StrictStr, ValidationError

from seqserve.errors import InvalidInput


class RequestInput(BaseModel):
    name: StrictStr
    shape: list[StrictInt]
    datatype: StrictStr
    parameters: dict[str, Any] | None = None
    data: Any = None


class RequestOutput(BaseModel):
    name: StrictStr
    parameters: dict[str, Any] | None = None


class InferRequestHeader(BaseModel):
    """The JSON object of `POST .../infer`: the whole body, or its head when binary tensors follow."""

    id: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


def parse_header(header: bytes) -> InferRequestHeader:
    """Parses and validates the JSON object; every failure is a 400 saying where and what."""
    try:
        return InferRequestHeader.model_validate_json(header)
    except ValidationError as e:
        raise InvalidInput(_describe(e, header)) from None


def peek_request_id(header: bytes) -> str | None:
    """The request's `id` if the JSON is readable at all, so an error can be logged with it."""
    try:
        value = json.loads(header).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _describe(error: ValidationError, header: bytes) -> str:
    first = error.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return f"malformed JSON in the request body: {first['ctx']['error']}"
    where = _location(first["loc"], header)
    more = f" (and {error.error_count() - 1} more problem(s))" if error.error_count() > 1 else ""
    return f"invalid inference request: {where}: {first['msg']}{more}"


def _location(loc: tuple[int | str, ...], header: bytes) -> str:
    """`inputs.0.shape.1` in the words of the request: input 'x' field 'shape[1]'."""
    if not loc:
        return "request body"
    section = str(loc[0])
    if len(loc) >= 2 and section in ("inputs", "outputs") and isinstance(loc[1], int):
        kind = section[:-1]
        name = _tensor_name(header, section, loc[1])
        tensor = f"{kind} '{name}'" if name else f"{kind} #{loc[1]}"
        if len(loc) == 2:
            return tensor
        field = str(loc[2]) + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[3:])
        return f"{tensor} field '{field}'"
    return "field '" + ".".join(str(part) for part in loc) + "'"


def _tensor_name(header: bytes, section: str, index: int) -> str | None:
    try:
        name = json.loads(header)[section][index]["name"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return name if isinstance(name, str) else None
