"""The OpenAPI description of the V2 bodies FastAPI cannot see: the infer endpoints (plain ASGI, see
`seqserve.rest.inference`) and the session endpoints (which read their bodies themselves).

The models here document the wire and validate nothing: requests are validated by
`seqserve.rest.wire`, responses are built by `seqserve.rest.encode`. `tests/fuzz` feeds the document to
schemathesis, so what it says is what the server is held to.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from seqserve.datatypes import V2_DATATYPES
from seqserve.rest.binary_extension import BINARY_TYPE, JSON_TYPE
from seqserve.rest.wire import InferRequestHeader
from seqserve.shapes import MAX_DIMENSIONS

INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
_SCHEMAS = "#/components/schemas/"


class ResponseOutput(BaseModel):
    """One output tensor: its values in `data` (row-major, flat), or after the JSON when binary."""

    name: str
    datatype: str = Field(json_schema_extra={"enum": list(V2_DATATYPES)})
    shape: list[int] = Field(max_length=MAX_DIMENSIONS, json_schema_extra={"items": {"type": "integer", "minimum": 0}})
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size`: the output's bytes follow the JSON (binary tensor extension)."
    )
    data: list[float | int | bool | str] | None = Field(None, description="Absent when the output is binary.")


class InferResponse(BaseModel):
    """The answer to an infer request; the session endpoints answer with it too (states as `outputs`)."""

    model_name: str
    model_version: str
    id: str | None = Field(None, description="The request's `id`, echoed; a session's id on the session endpoints.")
    parameters: dict[str, Any] | None = Field(
        None,
        description="`sequence_step` of a numbered sequence step; `session_id`, `sequence_step` and `batch_size` "
        "on the session endpoints.",
    )
    outputs: list[ResponseOutput]


class ErrorBody(BaseModel):
    """Every failure, with the status of seqserve's one error table (README, "Errors")."""

    error: str = Field(description="What was wrong, naming the tensor, parameter or limit.")


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON_TYPE: {"schema": {"$ref": _SCHEMAS + "ErrorBody"}}}}


# The errors a V2 body can earn, for the endpoints that take one.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("The request is malformed or does not match the model"),
    404: _error("No such model, version or session"),
    409: _error("A session conflict: a step out of order, or the session advanced elsewhere"),
    413: _error("The body is over the configured size limit"),
    429: _error("A configured limit (sessions, state bytes, queue) would be exceeded"),
    503: _error("The model is not ready or the session store does not answer; retry"),
}


def request_body(required: bool, description: str) -> dict[str, Any]:
    """A `requestBody` holding a V2 request: JSON, or JSON followed by binary tensors."""
    return {
        "required": required,
        "description": description,
        "content": {
            JSON_TYPE: {"schema": {"$ref": _SCHEMAS + "InferRequest"}},
            BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }


def _ok(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON_TYPE: {"schema": {"$ref": _SCHEMAS + "InferResponse"}}}}


# A session endpoint's answer: the session's states as the `outputs` of a V2 response.
SESSION_ANSWER = _ok("The session: its id as `id`, its states as `outputs`, its step and batch size in `parameters`")


def complete_document(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document with the infer endpoints added, the V2 bodies described, and every error as the
    `{"error": ...}` body it really is (FastAPI lists a 422 that seqserve answers as 400)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model, name in (
        (InferRequestHeader, "InferRequest"),
        (InferResponse, "InferResponse"),
        (ErrorBody, "ErrorBody"),
    ):
        document = model.model_json_schema(ref_template=_SCHEMAS + "{model}")
        components.update(document.pop("$defs", {}))
        components[name] = document
    paths = schema.setdefault("paths", {})
    for path in INFER_PATHS:
        names = ["name", "version"] if "{version}" in path else ["name"]
        paths[path] = {
            "post": {
                "tags": ["inference"],
                "summary": "Infer (KServe V2; JSON, or JSON followed by binary tensors)",
                "operationId": "infer_version" if "{version}" in path else "infer",
                "parameters": [
                    {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
                ],
                "requestBody": request_body(True, "A V2 inference request"),
                "responses": {
                    "200": _ok("The outputs, as JSON or JSON followed by binary tensors"),
                    **{str(code): error for code, error in ERRORS.items()},
                },
            }
        }
    for operations in paths.values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault("400", ERRORS[400])
            responses.setdefault("default", _error("An error"))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema
