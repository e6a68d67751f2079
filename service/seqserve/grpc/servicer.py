"""inference.GRPCInferenceService over the data plane: decode, call, encode, nothing else.

Errors are not handled here: a SeqserveError raised by a method becomes its gRPC status in
`seqserve.grpc.interceptor`. The one exception is ModelStreamInfer, where a failure belongs to one
request of the stream and is answered in-band, so the stream survives it.

When the server stops (`stop_streams`), every open stream ends with UNAVAILABLE at a request
boundary: at once where it waits for the client's next request, after the answer where one is
being computed. Every request answered on it was applied and none after it, so a client sends the
rest on a new stream, which the load balancer opens on another replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from seqserve.dataplane import DataPlane
from seqserve.errors import SeqserveError
from seqserve.grpc import converters, extensions
from seqserve.grpc.auth import caller_of
from seqserve.grpc.generated import grpc_service_pb2 as pb
from seqserve.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceServicer
from seqserve.grpc.interceptor import internal_error_message
from seqserve.grpc.status import grpc_code
from seqserve.model_configuration import model_config
from seqserve.statistics import model_statistics

log = logging.getLogger(__name__)



STOPPING = (
    "the server is shutting down: every request answered on this stream was applied, none after it; "
    "send the rest on a new stream"
)


class InferenceServicer(GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane
        # The task of each open stream -> whether it waits for the client's next request.
        self._streams: dict[asyncio.Task[object], bool] = {}
        self._stopping = False

    def stop_streams(self) -> None:
        """Ends every open stream at its next request boundary (module docstring)."""
        self._stopping = True
        for task, waiting in self._streams.items():
            if waiting:
                task.cancel()

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._dataplane.catalog.live())

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._dataplane.catalog.ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._dataplane.catalog.model_ready(request.name, request.version or None))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return converters.server_metadata_to_proto(self._dataplane.catalog.server_metadata())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        metadata = self._dataplane.catalog.model_metadata(request.name, request.version or None)
        return converters.model_metadata_to_proto(metadata)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        return extensions.model_config_to_proto(model_config(self._dataplane.store, request.name, request.version))

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        statistics = model_statistics(self._dataplane.store, request.name, request.version)
        return extensions.model_statistics_to_proto(statistics)

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        return extensions.repository_index_to_proto(self._dataplane.repository.index(ready_only=request.ready))

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        self._dataplane.auth.require_model_control(caller_of(self._dataplane.auth, context))
        config, files = extensions.load_parameters(request.model_name, request.parameters)
        await self._dataplane.repository.load(request.model_name, config, files)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        self._dataplane.auth.require_model_control(caller_of(self._dataplane.auth, context))
        extensions.check_unload_parameters(request.model_name, request.parameters)
        await self._dataplane.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        self._dataplane.limits.check_tensor_count(len(request.inputs))  # before decoding any of them
        decoded = converters.infer_request_from_proto(request)
        decoded.owner = caller_of(self._dataplane.auth, context)
        return converters.infer_response_to_proto(await self._dataplane.infer(decoded))

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """One response per request, in the order the requests came.

        Requests are applied one after another, never overlapped: a stream is how a client sends
        the steps of a sequence, and steps must reach the model in order.
        """
        task = asyncio.current_task()
        assert task is not None
        try:
            owner = caller_of(self._dataplane.auth, context)  # once: a stream's metadata is its first message's
        except SeqserveError as e:
            await context.abort(grpc_code(e), e.message)
        streams = self._streams
        streams[task] = True
        stopped = False
        try:
            async for request in requests:
                streams[task] = False
                try:
                    self._dataplane.limits.check_tensor_count(len(request.inputs))
                    decoded = converters.infer_request_from_proto(request)
                    decoded.owner = owner
                    response = await self._dataplane.infer(decoded)
                    answer = pb.ModelStreamInferResponse()
                    converters.infer_response_to_proto(response, answer.infer_response)
                except SeqserveError as e:
                    answer = converters.stream_error_to_proto(request, e.message)
                except Exception as e:
                    log.exception("request %s of a ModelStreamInfer stream failed", request.id or "-")
                    answer = converters.stream_error_to_proto(request, internal_error_message("ModelStreamInfer", e))
                yield answer
                if self._stopping:
                    stopped = True
                    break
                streams[task] = True
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            stopped = True  # cancelled by stop_streams while waiting for the next request
        finally:
            streams.pop(task, None)
        if stopped:
            await context.abort(grpc.StatusCode.UNAVAILABLE, STOPPING)
