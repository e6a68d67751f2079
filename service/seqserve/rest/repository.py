"""Triton's model repository extension over REST: `POST /v2/repository/index`, `.../models/{m}/load|unload`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from seqserve.dataplane import DataPlane
from seqserve.errors import InvalidInput
from seqserve.repository import decode_file
from seqserve.rest.auth import owner_of
from seqserve.rest.body import read_json_object


def repository_router(dataplane: DataPlane, max_request_bytes: int) -> APIRouter:
    router = APIRouter(prefix="/v2/repository", tags=["repository"])

    @router.post("/index")
    async def index(request: Request) -> JSONResponse:
        body = await read_json_object(request, max_request_bytes, "index")
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput(f"index: 'ready' must be true or false, got {ready!r}")
        return JSONResponse([asdict(row) for row in dataplane.repository.index(ready_only=ready)])

    @router.post("/models/{name}/load")
    async def load(name: str, request: Request) -> Response:
        dataplane.auth.require_model_control(owner_of(request.scope))
        parameters = _parameters(await read_json_object(request, max_request_bytes, f"load of model '{name}'"), name)
        config = parameters.pop("config", None)
        if config is not None and not isinstance(config, str):
            raise InvalidInput(f"load of model '{name}': parameter 'config' must be a string of JSON")
        files = {key: decode_file(key, value) for key, value in parameters.items()}
        await dataplane.repository.load(name, config, files)
        return JSONResponse({})  # an empty object, as the documented JSON answer

    @router.post("/models/{name}/unload")
    async def unload(name: str, request: Request) -> Response:
        dataplane.auth.require_model_control(owner_of(request.scope))
        parameters = _parameters(await read_json_object(request, max_request_bytes, f"unload of model '{name}'"), name)
        # No model here depends on another (no ensembles), so unload_dependents changes nothing.
        dependents = parameters.pop("unload_dependents", False)
        if not isinstance(dependents, bool) or parameters:
            raise InvalidInput(f"unload of model '{name}': the only parameter is unload_dependents (true or false)")
        await dataplane.repository.unload(name)
        return JSONResponse({})  # an empty object, as the documented JSON answer

    return router


def _parameters(body: dict[str, Any], name: str) -> dict[str, Any]:
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"model '{name}': 'parameters' must be a JSON object")
    return dict(parameters)
