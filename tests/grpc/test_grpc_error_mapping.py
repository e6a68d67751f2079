"""Every failure reaches the client as the right gRPC status, and a stream survives its failed requests.

The server runs in-process here, over a data plane that fails on command: the one way to make it
raise each error of the table, and a bug (an unexpected exception), on purpose.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from helpers.server import free_port
from seqserve.auth import Authenticator
from seqserve.config import Settings
from seqserve.errors import (
    ExportError,
    InferenceFailed,
    InvalidInput,
    LimitExceeded,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    PermissionDenied,
    SeqserveError,
    SessionConflict,
    SessionNotFound,
    StoreUnavailable,
    Unauthenticated,
    UnsupportedEncoding,
)
from seqserve.grpc.generated import grpc_service_pb2 as pb
from seqserve.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from seqserve.grpc.server import create_grpc_server
from seqserve.grpc.status import grpc_code
from seqserve.inference import InferRequest, InferResponse, Tensor
from seqserve.validation import RequestLimits


class FailingDataPlane:
    """Answers inferences with the input unchanged, or raises what the request's model name says."""

    failures: dict[str, Exception] = {
        "not-found": ModelNotFound("model 'not-found' is not in the store"),
        "invalid": InvalidInput("input 'x' is wrong"),
        "not-ready": ModelNotReady("model 'not-ready' is loading"),
        "conflict": SessionConflict("session 's' moved on"),
        "limit": LimitExceeded("too many sessions"),
        "bug": ZeroDivisionError("division by zero"),
    }

    auth = Authenticator()  # off
    limits = RequestLimits()

    @property
    def catalog(self) -> FailingDataPlane:  # health and readiness answers live here too
        return self

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return True

    def model_ready(self, name: str, version: str | None = None) -> bool:
        if name in self.failures:
            raise self.failures[name]
        return True

    async def infer(self, request: InferRequest) -> InferResponse:
        if request.model_name in self.failures:
            raise self.failures[request.model_name]
        return InferResponse(request.model_name, "1", request.id, [Tensor("y", "FP32", request.inputs[0].data)])


@pytest.fixture
async def stub() -> AsyncIterator[GRPCInferenceServiceStub]:
    settings = Settings(host="127.0.0.1", grpc_port=free_port())
    server = create_grpc_server(FailingDataPlane(), settings)  # type: ignore[arg-type]
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
        yield GRPCInferenceServiceStub(channel)
    await server.stop(grace=None)


def _request(model: str, request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="x", datatype="FP32", shape=[2])
    request.raw_input_contents.append(np.array([1.5, -2], np.float32).tobytes())
    return request


# The table of the README, written out: a class whose code drifts from it fails here.
EXPECTED_CODES = {
    "not-found": grpc.StatusCode.NOT_FOUND,
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "not-ready": grpc.StatusCode.UNAVAILABLE,
    "conflict": grpc.StatusCode.ABORTED,
    "limit": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@pytest.mark.parametrize(("model", "code"), list(EXPECTED_CODES.items()))
async def test_each_seqserve_error_becomes_its_own_grpc_code(
    stub: GRPCInferenceServiceStub, model: str, code: grpc.StatusCode
) -> None:
    message = FailingDataPlane.failures[model].args[0]
    for call in (stub.ModelInfer(_request(model)), stub.ModelReady(pb.ModelReadyRequest(name=model))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert (caught.value.code(), caught.value.details()) == (code, message)


@pytest.mark.parametrize(
    ("error", "http", "code"),
    [
        (InvalidInput, 400, grpc.StatusCode.INVALID_ARGUMENT),
        (ExportError, 400, grpc.StatusCode.INVALID_ARGUMENT),
        (ModelNotFound, 404, grpc.StatusCode.NOT_FOUND),
        (SessionNotFound, 404, grpc.StatusCode.NOT_FOUND),
        (Unauthenticated, 401, grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied, 403, grpc.StatusCode.PERMISSION_DENIED),
        (SessionConflict, 409, grpc.StatusCode.ABORTED),
        (PayloadTooLarge, 413, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (UnsupportedEncoding, 415, grpc.StatusCode.UNIMPLEMENTED),
        (LimitExceeded, 429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (InferenceFailed, 500, grpc.StatusCode.INTERNAL),
        (ModelNotReady, 503, grpc.StatusCode.UNAVAILABLE),
        (StoreUnavailable, 503, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_every_error_class_has_the_statuses_of_the_readme_table(
    error: type[SeqserveError], http: int, code: grpc.StatusCode
) -> None:
    instance = error("x")
    assert (instance.http_status, grpc_code(instance)) == (http, code)


def test_every_error_class_is_in_the_table_above() -> None:
    classes = {InvalidInput, ExportError, ModelNotFound, SessionNotFound, SessionConflict, PayloadTooLarge}
    classes |= {LimitExceeded, InferenceFailed, ModelNotReady, StoreUnavailable, Unauthenticated, UnsupportedEncoding}
    classes |= {PermissionDenied}
    assert set(SeqserveError.__subclasses__()) == classes


async def test_an_unexpected_exception_is_internal_with_a_message(stub: GRPCInferenceServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(_request("bug"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "ModelInfer" in caught.value.details() and "ZeroDivisionError: division by zero" in caught.value.details()


async def test_a_request_the_converters_reject_is_invalid_argument(stub: GRPCInferenceServiceStub) -> None:
    request = _request("fine")
    request.raw_input_contents[0] = b"\x00" * 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x' has 3 bytes" in caught.value.details()


async def test_a_stream_answers_failures_in_band_and_goes_on(stub: GRPCInferenceServiceStub) -> None:
    models = ["fine", "bug", "invalid", "fine", "not-found", "fine"]
    requests = [_request(model, f"r{k}") for k, model in enumerate(models)]
    answers = [answer async for answer in stub.ModelStreamInfer(iter(requests))]
    assert [a.infer_response.id for a in answers] == [f"r{k}" for k in range(len(models))]
    assert [bool(a.error_message) for a in answers] == [m != "fine" for m in models]
    assert "internal error" in answers[1].error_message and "ZeroDivisionError" in answers[1].error_message
    assert answers[2].error_message == "input 'x' is wrong"
    for answer in (answers[0], answers[3], answers[5]):
        assert np.frombuffer(answer.infer_response.raw_output_contents[0], "<f4").tolist() == [1.5, -2.0]
