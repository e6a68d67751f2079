"""Builds the grpc.aio server: the inference and session services, health checking and reflection on one port."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.grpc.auth import RequireApiKey
from seqserve.grpc.generated import grpc_service_pb2, session_service_pb2
from seqserve.grpc.generated.grpc_service_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from seqserve.grpc.generated.session_service_pb2_grpc import add_SessionServiceServicer_to_server
from seqserve.grpc.health import HealthServicer
from seqserve.grpc.interceptor import ErrorInterceptor
from seqserve.grpc.servicer import InferenceServicer
from seqserve.grpc.sessions import SessionServicer

INFERENCE_SERVICE = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SESSION_SERVICE = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name


class GrpcFrontEnd:
    """The gRPC server of `seqserve serve`, started and stopped gracefully."""

    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        self.inference = InferenceServicer(dataplane)
        self.server = create_grpc_server(dataplane, settings, self.inference)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace: float) -> None:
        """New calls are refused (UNAVAILABLE); open streams end at their next request boundary;
        calls still running after `grace` seconds are cancelled."""
        self.inference.stop_streams()
        await self.server.stop(grace)


def create_grpc_server(
    dataplane: DataPlane, settings: Settings, inference: InferenceServicer | None = None
) -> grpc.aio.Server:
    """A server bound to settings.host:settings.grpc_port, not started yet (the caller awaits start())."""
    server = grpc.aio.server(
        # Each open stream counts as one call; one call more is refused with RESOURCE_EXHAUSTED.
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        # API keys first: a call without its key is refused before anything else looks at it.
        interceptors=[*([RequireApiKey(dataplane.auth)] if dataplane.auth.on else []), ErrorInterceptor()],
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            # Responses are not capped: a sequence output can be larger than the request that asked for it.
            ("grpc.max_send_message_length", -1),
            # gRPC turns SO_REUSEPORT on by default, which lets a second server start on a busy port
            # and silently take half the traffic; a port conflict must fail loudly instead.
            ("grpc.so_reuseport", 0),
        ],
    )
    add_GRPCInferenceServiceServicer_to_server(inference or InferenceServicer(dataplane), server)
    add_SessionServiceServicer_to_server(SessionServicer(dataplane), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(dataplane), server)
    services = [
        INFERENCE_SERVICE,
        SESSION_SERVICE,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(services, server, pool=_reflection_pool())
    server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    return server


def _reflection_pool() -> descriptor_pool.DescriptorPool:
    """The descriptors reflection describes to clients such as grpcurl.

    Our messages live in a private pool, not protobuf's default one (scripts/gen_proto.sh says
    why), so reflection gets a pool of its own holding every file the server serves.
    """
    pool = descriptor_pool.DescriptorPool()
    # session_service.proto imports grpc_service.proto: a file goes in after those it depends on.
    files = (
        grpc_service_pb2.DESCRIPTOR,
        session_service_pb2.DESCRIPTOR,
        health_pb2.DESCRIPTOR,
        reflection_pb2.DESCRIPTOR,
    )
    for file in files:
        pool.AddSerializedFile(file.serialized_pb)
    return pool
