"""The standard gRPC health service (grpc.health.v1.Health), answered from the data plane's readiness.

Kubernetes' native gRPC probes and grpc-health-probe call Check. The stock servicer of
grpcio-health-checking holds statuses someone must push; ours asks the data plane on every call,
so a model that finishes loading, or a version that is removed, shows without any bookkeeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from seqserve.dataplane import DataPlane

INFERENCE_SERVICE = "inference.GRPCInferenceService"
# "" is the server as a whole, by the health protocol's convention; both mean "can serve inferences".
SERVICES = ("", INFERENCE_SERVICE)

Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, dataplane: DataPlane, watch_interval: float = 1.0) -> None:
        self._dataplane = dataplane
        self._watch_interval = watch_interval

    def _status(self, service: str) -> Status:
        if service not in SERVICES:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        ready = self._dataplane.catalog.live() and self._dataplane.catalog.ready()
        return health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=self._status(request.service))

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={s: health_pb2.HealthCheckResponse(status=self._status(s)) for s in SERVICES}
        )

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """Sends the status now and again on every change; readiness is polled, it has no events."""
        last = None
        while True:
            status = self._status(request.service)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(self._watch_interval)
