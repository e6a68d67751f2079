"""Fork and rewind over REST: a session (or a Triton sequence) copied into new sessions, or set back
to a step it keeps (`session_history`).

    POST /v2/models/{name}/sessions/{id}/fork     {"count": 2, "step": 3}  (both optional)
         -> {"sessions": [{"session_id", "model_name", "model_version", "sequence_step", "batch_size"}, ...]}
    POST /v2/models/{name}/sessions/{id}/rewind   {"step": 3}
         -> the session, as GET answers it

`{id}` is a session id or a Triton sequence's string id; `?id_type=uint64` makes it a sequence's
uint64 id (Triton keeps the two kinds apart: uint64 42 is not "42").
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response

from seqserve.dataplane import DataPlane
from seqserve.errors import InvalidInput
from seqserve.rest.auth import owner_of
from seqserve.rest.body import read_json_object
from seqserve.rest.openapi import ERRORS, SESSION_ANSWER
from seqserve.rest.sessions import session_response

# Fork and rewind bodies are a few fields: anything bigger is a mistake.
_MAX_BODY_BYTES = 4096
_UINT64 = "uint64"


def _json_body(fields: dict[str, str], description: str) -> dict[str, Any]:
    properties = {name: {"type": "integer", "description": text} for name, text in fields.items()}
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    return {"requestBody": {"description": description, "content": {"application/json": {"schema": schema}}}}


_FORK_IN = _json_body(
    {"count": "How many forks (default 1)", "step": "Fork from the state after this past step (session_history)"},
    "Optional; empty for one fork of the current state",
)
_REWIND_IN = _json_body({"step": "The step to go back to (session_history keeps it)"}, "The step")
_FORKS_OUT = {
    "description": "The new sessions",
    "content": {"application/json": {"schema": {"type": "object", "properties": {"sessions": {"type": "array"}}}}},
}


def branches_router(dataplane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v2/models", tags=["sessions"])

    @router.post("/{name}/sessions/{session_id}/fork", openapi_extra=_FORK_IN, responses={200: _FORKS_OUT, **ERRORS})
    async def fork(request: Request, name: str, session_id: str, id_type: str | None = None) -> Response:
        body = await _fields(request, {"count", "step"}, "fork")
        forks = await dataplane.session_api.fork(
            name, _sequence_id(session_id, id_type), body.get("count", 1), body.get("step"), owner_of(request.scope)
        )
        made = [
            {
                "session_id": f.session_id,
                "model_name": f.model_name,
                "model_version": f.model_version,
                "sequence_step": f.step,
                "batch_size": f.batch_size,
            }
            for f in forks
        ]
        return Response(json.dumps({"sessions": made}), media_type="application/json")

    @router.post(
        "/{name}/sessions/{session_id}/rewind", openapi_extra=_REWIND_IN, responses={200: SESSION_ANSWER, **ERRORS}
    )
    async def rewind(request: Request, name: str, session_id: str, id_type: str | None = None) -> Response:
        body = await _fields(request, {"step"}, "rewind")
        if "step" not in body:
            raise InvalidInput("'step' is required: the body is {\"step\": k}, the step to rewind to")
        info = await dataplane.session_api.rewind(
            name, _sequence_id(session_id, id_type), body["step"], owner_of(request.scope)
        )
        return session_response(info)

    return router


async def _fields(request: Request, known: set[str], what: str) -> dict[str, Any]:
    """The body's JSON object (an empty body: no fields), holding only `known` fields."""
    body = await read_json_object(request, _MAX_BODY_BYTES, what)
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(map(repr, unknown))}; expected {sorted(known)}")
    return body


def _sequence_id(raw: str, id_type: str | None) -> int | str:
    """The path's id: a string, or with `?id_type=uint64` a Triton sequence's uint64 id."""
    if id_type in (None, "string"):
        return raw
    if id_type != _UINT64:
        raise InvalidInput(f"'id_type' must be 'uint64' or 'string', not {id_type!r}")
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) < 2**64:
        raise InvalidInput(f"a uint64 sequence id is a whole number from 1 to 2^64-1, not {raw[:32]!r}")
    return int(raw)
