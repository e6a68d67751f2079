"""FastAPI application factory (placeholder with health endpoints; the full V2 REST API is being written)."""

from __future__ import annotations

from fastapi import FastAPI, Response

from seqserve.config import Settings
from seqserve.dataplane import DataPlane


def create_app(dataplane: DataPlane, settings: Settings) -> FastAPI:
    app = FastAPI(title="seqserve")

    @app.get("/v2/health/live")
    def live() -> Response:
        return Response(status_code=200 if dataplane.live() else 503)

    @app.get("/v2/health/ready")
    def ready() -> Response:
        return Response(status_code=200 if dataplane.ready() else 503)

    return app
