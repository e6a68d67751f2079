"""The one place where a failure inside an inference RPC becomes a gRPC status.

A SeqserveError names its own gRPC code (seqserve.errors: one table for REST and gRPC), so the
servicer just raises; anything else is a bug on our side: logged with its traceback and answered
as INTERNAL with a message, never as grpc's bare "Unexpected error".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from seqserve.errors import SeqserveError
from seqserve.grpc.status import grpc_code

log = logging.getLogger(__name__)

# What a server interceptor is handed to get a call's handler.
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]

# The services whose methods raise SeqserveError: inference and our session API.
SERVICE_PREFIXES = ("/inference.GRPCInferenceService/", "/seqserve.SessionService/")


def internal_error_message(method: str, error: BaseException) -> str:
    """What a client is told about an unexpected failure: enough to report it, no traceback."""
    return f"internal error in {method}: {type(error).__name__}: {error}"


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary method of our services (health and reflection pass through).

    ModelStreamInfer, our one streaming method, answers each failure in-band in the servicer (the
    stream goes on), so it is not wrapped: a second async generator per message would only cost.
    """

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(SERVICE_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _unary(method: str, behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise
        except SeqserveError as e:
            await context.abort(grpc_code(e), e.message)
        except Exception as e:
            log.exception("%s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL, internal_error_message(method, e))

    return wrapped
