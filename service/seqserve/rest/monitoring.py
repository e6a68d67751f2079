"""`GET /metrics`: the Prometheus text exposition of the data plane's metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from seqserve.dataplane import DataPlane


def monitoring_router(dataplane: DataPlane) -> APIRouter:
    router = APIRouter(tags=["monitoring"])

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(dataplane.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
