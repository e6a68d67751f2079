"""Triton's model configuration and statistics extensions (`GET /v2/models/.../config`, `.../stats`).

Included before the metadata routes: `GET /v2/models/stats` must not be taken for the metadata of
a model named "stats" (a model of that name keeps its metadata under `/versions/{v}`).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from seqserve.dataplane import DataPlane
from seqserve.model_configuration import model_config
from seqserve.statistics import model_statistics


def triton_router(dataplane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v2/models", tags=["model configuration", "statistics"])

    @router.get("/stats")
    async def every_model_statistics() -> JSONResponse:
        return JSONResponse(model_statistics(dataplane.store))

    @router.get("/{name}/stats")
    async def statistics(name: str) -> JSONResponse:
        return JSONResponse(model_statistics(dataplane.store, name))

    @router.get("/{name}/versions/{version}/stats")
    async def version_statistics(name: str, version: str) -> JSONResponse:
        return JSONResponse(model_statistics(dataplane.store, name, version))

    @router.get("/{name}/config")
    async def config(name: str) -> JSONResponse:
        return JSONResponse(model_config(dataplane.store, name))

    @router.get("/{name}/versions/{version}/config")
    async def version_config(name: str, version: str) -> JSONResponse:
        return JSONResponse(model_config(dataplane.store, name, version))

    return router
