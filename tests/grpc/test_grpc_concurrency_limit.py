"""A bound on concurrent gRPC calls, open streams included: one call too many is refused with
RESOURCE_EXHAUSTED at once (the client may retry, here or on another replica), and calls are
accepted again as soon as one ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from helpers.server import RunningServer, running_server
from seqserve.grpc.generated import grpc_service_pb2 as pb
from seqserve.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceStub

MAX_CALLS = 2


@pytest.fixture(scope="module")
def bounded_server(store: Path) -> Iterator[RunningServer]:
    with running_server(store, env={"SEQSERVE_MAX_CONCURRENT_RPCS": str(MAX_CALLS)}) as running:
        yield running


def _request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="lstm")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1, 3])
    request.raw_input_contents.append(np.ones((1, 1, 3), "<f4").tobytes())
    return request


async def test_a_call_beyond_the_bound_is_resource_exhausted_and_the_next_one_after_a_stream_ends_is_served(
    bounded_server: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(bounded_server.grpc_url) as channel:
        stub = GRPCInferenceServiceStub(channel)
        ends = [asyncio.Event() for _ in range(MAX_CALLS)]

        def requests(end: asyncio.Event) -> AsyncIterator[pb.ModelInferRequest]:
            async def generate() -> AsyncIterator[pb.ModelInferRequest]:
                yield _request()
                await end.wait()

            return generate()

        streams = [stub.ModelStreamInfer(requests(end)) for end in ends]
        for stream in streams:  # each stream open and answering: they hold every slot
            answer = await stream.read()
            assert not answer.error_message
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ModelInfer(_request(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
        ends[0].set()
        assert await streams[0].read() is grpc.aio.EOF
        answer = await stub.ModelInfer(_request(), timeout=10)
        assert answer.outputs
        ends[1].set()
        await streams[1].read()
