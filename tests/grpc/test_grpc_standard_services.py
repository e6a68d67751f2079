"""The standard services beside ours: gRPC health checking (Kubernetes probes) and reflection (grpcurl)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from helpers.server import RunningServer

INFERENCE_SERVICE = "inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_url) as c:
        yield c


@pytest.mark.parametrize("service", ["", INFERENCE_SERVICE], ids=["whole-server", "inference-service"])
def test_health_check_says_serving_when_the_models_are_ready(channel: grpc.Channel, service: str) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_check_of_an_unknown_service_is_not_found(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nope.Nope"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watch_sends_the_current_status_first(channel: grpc.Channel) -> None:
    updates = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert next(updates).status == health_pb2.HealthCheckResponse.SERVING
    updates.cancel()


def test_reflection_lists_the_inference_service(channel: grpc.Channel) -> None:
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert INFERENCE_SERVICE in services
    assert "grpc.health.v1.Health" in services


def test_reflection_describes_every_rpc_we_serve(channel: grpc.Channel) -> None:
    # What grpcurl does: fetch the file defining the service, then read its methods.
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = pool.FindServiceByName(INFERENCE_SERVICE)
    assert {m.name for m in service.methods} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer", "ModelStreamInfer",
        "ModelConfig", "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
    }  # fmt: skip
    stream = service.methods_by_name["ModelStreamInfer"]
    assert stream.client_streaming and stream.server_streaming
    assert stream.output_type.fields_by_name["error_message"].number == 1
