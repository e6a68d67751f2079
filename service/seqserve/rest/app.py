"""The FastAPI application of the KServe V2 REST API: routers over one data plane, one error table."""

from __future__ import annotations

from fastapi import FastAPI

from seqserve import __version__
from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.rest.error_handlers import install_error_handlers
from seqserve.rest.health import health_router
from seqserve.rest.inference import inference_router
from seqserve.rest.metadata import metadata_router
from seqserve.rest.monitoring import monitoring_router
from seqserve.rest.sessions import sessions_router


def create_app(dataplane: DataPlane, settings: Settings) -> FastAPI:
    """The REST app `seqserve serve` runs in uvicorn; tests may also drive it in-process with httpx."""
    app = FastAPI(title="seqserve", version=__version__, summary="KServe V2 inference for Keras recurrent models")
    install_error_handlers(app)
    app.include_router(health_router(dataplane))
    app.include_router(metadata_router(dataplane))
    app.include_router(inference_router(dataplane, settings))
    app.include_router(sessions_router(dataplane, settings))
    app.include_router(monitoring_router(dataplane))
    return app
