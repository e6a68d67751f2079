"""The JSON shape of a V2 inference request, validated by pydantic at the wire.

Only the structure is validated here (names, shapes, datatypes, parameter maps); tensor `data` is
passed through untouched as `Any`, so a large JSON tensor costs one Rust parse and one NumPy
conversion, never a per-element pydantic check.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic import BaseModel, Field, StrictInt, StrictStr, ValidationError

from seqserve.datatypes import V2_DATATYPES
from seqserve.errors import InvalidInput
from seqserve.shapes import MAX_DIMENSIONS

# How deeply a request's JSON may nest below its top-level object (level 0): the recursion limit of
# pydantic-core's parser (jiter), which reads the body; tests pin it. A 64-dimension tensor's `data`
# nested in full reaches level 67.
MAX_JSON_DEPTH = 200


# What the OpenAPI document says of the free-form fields (`seqserve.rest.openapi`); schema only, no
# validation: `data` stays `Any` for speed, and a shape or datatype the schema excludes is still
# refused with a message of our own.
_DATA_DOC: dict[str, Any] = {
    "description": "The tensor's values, row-major: flat, or nested as its shape (absent with binary_data_size).",
    "type": "array",
    "items": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "array"}]},
}
_SHAPE_DOC: dict[str, Any] = {"maxItems": MAX_DIMENSIONS, "items": {"type": "integer", "minimum": 0}}
_REQUEST_PARAMETERS_DOC: dict[str, Any] = {
    "description": "Triton's sequence parameters, seqserve's `sequence_step`, the binary extension's default.",
    "properties": {
        "sequence_id": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]},
        "sequence_start": {"type": "boolean"},
        "sequence_end": {"type": "boolean"},
        "sequence_step": {"type": "integer", "minimum": 1},
        "binary_data_output": {"type": "boolean"},
    },
}
_INPUT_PARAMETERS_DOC: dict[str, Any] = {
    "description": "`binary_data_size`: this many bytes of the tensor follow the JSON (binary tensor extension).",
    "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
}
_OUTPUT_PARAMETERS_DOC: dict[str, Any] = {
    "description": "`binary_data`: return this output as bytes after the JSON.",
    "properties": {"binary_data": {"type": "boolean"}},
}


class RequestInput(BaseModel):
    name: StrictStr
    shape: list[StrictInt] = Field(json_schema_extra=_SHAPE_DOC)
    datatype: StrictStr = Field(json_schema_extra={"enum": list(V2_DATATYPES)})
    parameters: dict[str, Any] | None = Field(None, json_schema_extra=_INPUT_PARAMETERS_DOC)
    data: Any = Field(None, json_schema_extra=_DATA_DOC)


class RequestOutput(BaseModel):
    name: StrictStr
    parameters: dict[str, Any] | None = Field(None, json_schema_extra=_OUTPUT_PARAMETERS_DOC)


class InferRequestHeader(BaseModel):
    """The JSON object of `POST .../infer`: the whole body, or its head when binary tensors follow."""

    id: StrictStr | None = None
    parameters: dict[str, Any] | None = Field(None, json_schema_extra=_REQUEST_PARAMETERS_DOC)
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
    # pydantic-core, not the json module: a body nested 1,000 deep is a RecursionError there.
    try:
        value = pydantic_core.from_json(header).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _describe(error: ValidationError, header: bytes) -> str:
    first = error.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        problem = str(first["ctx"]["error"])
        if problem.startswith("recursion limit exceeded"):
            place = problem.removeprefix("recursion limit exceeded").strip()
            return f"the request body's JSON is nested more than {MAX_JSON_DEPTH} levels deep ({place})"
        return f"malformed JSON in the request body: {problem}"
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
        name = pydantic_core.from_json(header)[section][index]["name"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return name if isinstance(name, str) else None
