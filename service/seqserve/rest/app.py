"""The KServe V2 REST API: FastAPI routers over one data plane, one error table, and the infer
endpoint's ASGI fast path in front of them."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp

from seqserve import __version__
from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.rest.error_handlers import install_error_handlers
from seqserve.rest.fast_path import InferFastPath
from seqserve.rest.health import health_router
from seqserve.rest.inference import inference_router
from seqserve.rest.metadata import metadata_router
from seqserve.rest.monitoring import monitoring_router
from seqserve.rest.sessions import sessions_router


def create_app(dataplane: DataPlane, settings: Settings) -> ASGIApp:
    """The REST app `seqserve serve` runs in uvicorn; tests may also drive it in-process with httpx."""
    return InferFastPath(create_fastapi_app(dataplane, settings), dataplane, settings.max_request_bytes)


def create_fastapi_app(dataplane: DataPlane, settings: Settings) -> FastAPI:
    """Every endpoint as FastAPI routes (infer included, for the OpenAPI document), without the fast path."""
    app = FastAPI(title="seqserve", version=__version__, summary="KServe V2 inference for Keras recurrent models")
    install_error_handlers(app)
    app.include_router(health_router(dataplane))
    app.include_router(metadata_router(dataplane))
    app.include_router(inference_router(dataplane, settings))
    app.include_router(sessions_router(dataplane, settings))
    app.include_router(monitoring_router(dataplane))
    return app
