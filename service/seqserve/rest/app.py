"""The KServe V2 REST API: one FastAPI app, one route table, one error table."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from seqserve import __version__
from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.rest.auth import RequireApiKey
from seqserve.rest.branches import branches_router
from seqserve.rest.compression import CompressAnswers
from seqserve.rest.error_handlers import install_error_handlers
from seqserve.rest.health import health_router
from seqserve.rest.inference import InferRouting, infer_routes
from seqserve.rest.metadata import metadata_router
from seqserve.rest.monitoring import monitoring_router
from seqserve.rest.openapi import complete_document
from seqserve.rest.playground import playground_router
from seqserve.rest.repository import repository_router
from seqserve.rest.sessions import sessions_router
from seqserve.rest.triton import triton_router
from seqserve.rest.websocket import StreamEndpoint

# FastAPI's own OpenTelemetry instrumentation probes the global OTel providers on every request
# (~13 us here, a tenth of a streamed step's REST handling); seqserve's metrics are Prometheus, at /metrics.
_NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}


def create_app(dataplane: DataPlane, settings: Settings) -> FastAPI:
    """The REST app `seqserve serve` runs in uvicorn; tests may also drive it in-process with httpx.

    Infer comes first in the route table, and the innermost middleware hands it its requests
    directly (`InferRouting`): it is the request a busy server mostly gets.
    """
    app = FastAPI(
        title="seqserve",
        version=__version__,
        summary="KServe V2 inference for Keras recurrent models",
        telemetry=_NO_TELEMETRY,
    )
    install_error_handlers(app)
    routes = infer_routes(dataplane, settings.max_request_bytes)
    app.router.routes[:0] = routes  # before /docs and the rest
    # WebSocket streaming; RestFrontEnd ends its sockets before uvicorn's shutdown would cut them off.
    app.state.streams = StreamEndpoint(dataplane, settings.max_request_bytes, settings.websocket_max_in_flight)
    app.router.routes[len(routes) : len(routes)] = app.state.streams.routes()
    # Innermost: infer answers are compressed by the infer endpoint, which InferRouting hands them to.
    app.add_middleware(CompressAnswers)
    app.add_middleware(InferRouting, routes=routes)  # inside any added later
    if dataplane.auth.on:
        app.add_middleware(RequireApiKey, auth=dataplane.auth)
    app.include_router(health_router(dataplane))
    app.include_router(triton_router(dataplane))  # before metadata: /v2/models/stats is not a model
    app.include_router(metadata_router(dataplane))
    app.include_router(sessions_router(dataplane, settings))
    app.include_router(branches_router(dataplane))
    app.include_router(monitoring_router(dataplane))
    app.include_router(repository_router(dataplane, settings.max_request_bytes))
    app.include_router(playground_router())
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_document(build_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
