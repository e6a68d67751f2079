"""The protocol's floor: a grpc.aio server whose ModelStreamInfer does nothing but answer.

Each request is deserialized into the KServe V2 message and answered with a response shaped like
seqserve's for the benchmark model (one FP32 [1, 1, width] output in raw_output_contents and a
`sequence_step` parameter), serialized per answer. No model, no state, no validation: whatever
seqserve spends above this under the same load is the data plane's, not grpc.aio's or protobuf's.

    python -m serving.echo_server --port 50051 [--output lstm_1 --width 512]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator

import grpc

from seqserve.grpc.generated import grpc_service_pb2 as pb
from seqserve.grpc.generated.grpc_service_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)


class EchoServicer(GRPCInferenceServiceServicer):
    def __init__(self, output: str, width: int) -> None:
        response = pb.ModelInferResponse(model_name="lstm", model_version="1")
        response.outputs.add(name=output, datatype="FP32", shape=[1, 1, width])
        response.raw_output_contents.append(bytes(4 * width))
        response.parameters["sequence_step"].int64_param = 1
        self._answer = pb.ModelStreamInferResponse(infer_response=response)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # The same loop shape as seqserve's servicer: one answer per request, in order.
        async for _ in requests:
            yield self._answer


async def serve(port: int, output: str, width: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    add_GRPCInferenceServiceServicer_to_server(EchoServicer(output, width), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output", default="lstm_1")
    parser.add_argument("--width", type=int, default=512)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.output, args.width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
