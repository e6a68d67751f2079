"""The session API over REST: server-issued session ids, state read and replaced, explicit end.

Bodies reuse the V2 formats so existing tooling reads them: states go *in* as the `inputs` of a
V2 inference request (JSON or the binary extension) and come *out* as the `outputs` of a V2
inference response whose `id` is the session id and whose `parameters` say where the session is.

    POST   /v2/models/{name}[/versions/{v}]/sessions   create (optionally seeded with states)
    GET    /v2/models/{name}/sessions/{session_id}     read its states
    PUT    /v2/models/{name}/sessions/{session_id}     replace its states (Keras reset_states(states=...))
    DELETE /v2/models/{name}/sessions/{session_id}     end it
    POST   .../sessions/{session_id}/fork | /rewind    copy it, set it back (seqserve.rest.branches)

A created session is driven with ordinary infer requests whose `sequence_id` is the session id.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.inference import InferRequest, InferResponse, SessionInfo, Tensor
from seqserve.rest.auth import owner_of
from seqserve.rest.binary_extension import HEADER_LENGTH
from seqserve.rest.body import read_body
from seqserve.rest.decode import decode_request, split_body
from seqserve.rest.encode import encode_response
from seqserve.rest.openapi import ERRORS, SESSION_ANSWER, request_body

# The bodies these endpoints read and write themselves, for the OpenAPI document.
_STATES_IN = {"requestBody": request_body(False, "States as V2 `inputs` named like `lstm.h`; empty for zeros")}
_ANSWERS = {200: SESSION_ANSWER, **ERRORS}
_ENDED = {"description": "Ended", "content": {"application/json": {"schema": {"type": "object", "maxProperties": 0}}}}


def sessions_router(dataplane: DataPlane, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v2/models", tags=["sessions"])

    async def states_in(request: Request, name: str, version: str | None) -> list[Tensor]:
        body = await read_body(request, settings.max_request_bytes)
        if not body.strip():
            return []
        header, binary = split_body(body, request.headers.get(HEADER_LENGTH))
        return decode_request(header, binary, name, version).inputs

    async def create(request: Request, name: str, version: str | None) -> Response:
        states = await states_in(request, name, version)
        return session_response(await dataplane.session_api.create(name, version, states, _owner(request)))

    @router.post("/{name}/sessions", openapi_extra=_STATES_IN, responses=_ANSWERS)
    async def create_latest(request: Request, name: str) -> Response:
        return await create(request, name, None)

    @router.post("/{name}/versions/{version}/sessions", openapi_extra=_STATES_IN, responses=_ANSWERS)
    async def create_version(request: Request, name: str, version: str) -> Response:
        return await create(request, name, version)

    @router.get("/{name}/sessions/{session_id}", responses=_ANSWERS)
    async def read(request: Request, name: str, session_id: str) -> Response:
        return session_response(await dataplane.session_api.get(name, session_id, _owner(request)))

    @router.put("/{name}/sessions/{session_id}", openapi_extra=_STATES_IN, responses=_ANSWERS)
    async def replace(request: Request, name: str, session_id: str) -> Response:
        states = await states_in(request, name, None)
        return session_response(await dataplane.session_api.set_states(name, session_id, states, _owner(request)))

    @router.delete("/{name}/sessions/{session_id}", responses={200: _ENDED, **ERRORS})
    async def end(request: Request, name: str, session_id: str) -> Response:
        await dataplane.session_api.end(name, session_id, _owner(request))
        return Response(b"{}", media_type="application/json")

    return router


def _owner(request: Request) -> str | None:
    return owner_of(request.scope)


def session_response(info: SessionInfo) -> Response:
    response = InferResponse(
        model_name=info.model_name,
        model_version=info.model_version,
        id=info.session_id,
        outputs=info.states,
        parameters={"session_id": info.session_id, "sequence_step": info.step, "batch_size": info.batch_size},
    )
    content, headers = encode_response(InferRequest(info.model_name), response)
    return Response(content, headers=headers)
