"""Liveness and readiness, the endpoints Kubernetes probes call."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from seqserve.dataplane import DataPlane


def health_router(dataplane: DataPlane) -> APIRouter:
    """`/v2/health/live` and `/v2/health/ready`: 200 when true, 503 when false, so probes need no body."""
    router = APIRouter(prefix="/v2/health", tags=["health"])

    @router.get("/live")
    async def live() -> JSONResponse:
        alive = dataplane.catalog.live()
        return JSONResponse({"live": alive}, status_code=200 if alive else 503)

    @router.get("/ready")
    async def ready() -> JSONResponse:
        is_ready = dataplane.catalog.ready()
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    return router
