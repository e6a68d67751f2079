"""Server metadata, model metadata and model readiness (`GET /v2`, `GET /v2/models/...`)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from seqserve.dataplane import DataPlane
from seqserve.errors import ModelNotReady


def metadata_router(dataplane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["metadata"])

    @router.get("")
    async def server_metadata() -> JSONResponse:
        return JSONResponse(dataplane.catalog.server_metadata())

    @router.get("/models/{name}")
    async def model_metadata(name: str) -> JSONResponse:
        return JSONResponse(asdict(dataplane.catalog.model_metadata(name)))

    @router.get("/models/{name}/versions/{version}")
    async def model_version_metadata(name: str, version: str) -> JSONResponse:
        return JSONResponse(asdict(dataplane.catalog.model_metadata(name, version)))

    @router.get("/models/{name}/ready")
    async def model_ready(name: str) -> JSONResponse:
        return _readiness(dataplane, name, None)

    @router.get("/models/{name}/versions/{version}/ready")
    async def model_version_ready(name: str, version: str) -> JSONResponse:
        return _readiness(dataplane, name, version)

    return router


def _readiness(dataplane: DataPlane, name: str, version: str | None) -> JSONResponse:
    """200 when ready; an unknown model or version is a 404 (raised by the data plane), a known one not ready 503."""
    if dataplane.catalog.model_ready(name, version):
        return JSONResponse({"name": name, "ready": True})
    which = f"model '{name}'" + (f" version {version}" if version else "")
    error = ModelNotReady(f"{which} is not ready")
    return JSONResponse({"name": name, "ready": False, "error": error.message}, status_code=error.http_status)
