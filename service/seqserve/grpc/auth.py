"""API keys on gRPC: an interceptor refuses, with UNAUTHENTICATED, every call of a method that needs
a key and comes without a valid `authorization` metadata entry (`Bearer <key>`, as tritonclient
sends `headers={"authorization": ...}`); the servicers read the caller's name with `caller_of`."""

from __future__ import annotations

from typing import Any

import grpc

from seqserve.auth import Authenticator, grpc_method_kind
from seqserve.errors import Unauthenticated
from seqserve.grpc.interceptor import Continuation

_Metadata = tuple[tuple[str, str | bytes], ...] | None


def _authorization(metadata: _Metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def caller_of(auth: Authenticator, context: grpc.aio.ServicerContext) -> str | None:
    """The caller of a call of ours (inference, sessions); Unauthenticated without a valid key."""
    return auth.caller(None, _authorization(context.invocation_metadata()))


class RequireApiKey(grpc.aio.ServerInterceptor):
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        try:
            self.auth.caller(grpc_method_kind(method), _authorization(handler_call_details.invocation_metadata))
        except Unauthenticated as e:
            return _refusal(handler, e.message)
        return handler


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED and reads nothing."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **serializers)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **serializers)
    return grpc.stream_stream_rpc_method_handler(refuse, **serializers)
