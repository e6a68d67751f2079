"""The one error hierarchy of seqserve.

Every error knows its HTTP status and the name of its gRPC status code, so REST and gRPC can never
disagree on what a failure means (one table, read by both front ends). The name is turned into
grpcio's enum in `seqserve.grpc.status`, so exporting a model never loads the gRPC stack.
"""

from __future__ import annotations

from http import HTTPStatus


class SeqserveError(Exception):
    """Base of every error seqserve reports to a client or a user."""

    http_status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    # The name of a grpc.StatusCode member.
    grpc_status: str = "INTERNAL"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Seconds after which the same request may succeed (a refusal that will pass): REST sends
        # it as `Retry-After`.
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class InvalidInput(SeqserveError):
    """The request is malformed or does not match the model's signature."""

    http_status = HTTPStatus.BAD_REQUEST
    grpc_status = "INVALID_ARGUMENT"


class ModelNotFound(SeqserveError):
    """No such model, or no such version of it, in the store."""

    http_status = HTTPStatus.NOT_FOUND
    grpc_status = "NOT_FOUND"


class ModelNotReady(SeqserveError):
    """The model exists but cannot serve right now (loading, or failed to load)."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_status = "UNAVAILABLE"


class QueueFull(ModelNotReady):
    """The model's queue of waiting requests is at its bound (`max_queue_size`); retry shortly."""


class StoreUnavailable(SeqserveError):
    """The session store (Redis) did not answer in time; the request may be retried."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_status = "UNAVAILABLE"


class PayloadTooLarge(SeqserveError):
    """The request body is larger than the configured limit."""

    http_status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    grpc_status = "RESOURCE_EXHAUSTED"


class PermissionDenied(SeqserveError):
    """The caller's API key may not do this (loading and unloading models: `model_control_keys`)."""

    http_status = HTTPStatus.FORBIDDEN
    grpc_status = "PERMISSION_DENIED"


class UnsupportedEncoding(SeqserveError):
    """The request body is compressed with a `Content-Encoding` the server cannot inflate (Triton: 415)."""

    http_status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    grpc_status = "UNIMPLEMENTED"


class SessionConflict(SeqserveError):
    """Another request of the same session is being applied, or it was advanced elsewhere."""

    http_status = HTTPStatus.CONFLICT
    grpc_status = "ABORTED"

    def __init__(self, message: str, generation: int | None = None) -> None:
        super().__init__(message)
        # The stored session's generation, where a compare-and-set lost (seqserve.sessions.state).
        self.generation = generation


class SessionNotFound(SeqserveError):
    """The session is unknown, has ended, expired or was evicted."""

    http_status = HTTPStatus.NOT_FOUND
    grpc_status = "NOT_FOUND"


class LimitExceeded(SeqserveError):
    """A configured limit (sessions, state bytes, batch size) would be exceeded."""

    http_status = HTTPStatus.TOO_MANY_REQUESTS
    grpc_status = "RESOURCE_EXHAUSTED"


class Unauthenticated(SeqserveError):
    """Authentication is on and the request carries no API key, or one the server does not know."""

    http_status = HTTPStatus.UNAUTHORIZED
    grpc_status = "UNAUTHENTICATED"


class InferenceFailed(SeqserveError):
    """ONNX Runtime failed to run a request that passed validation."""

    http_status = HTTPStatus.INTERNAL_SERVER_ERROR
    grpc_status = "INTERNAL"


class ExportError(SeqserveError):
    """A Keras file cannot be exported: corrupt, truncated, unsupported or unsafe."""

    http_status = HTTPStatus.BAD_REQUEST
    grpc_status = "INVALID_ARGUMENT"
