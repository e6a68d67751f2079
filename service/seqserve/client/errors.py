"""The client's errors: one class per row of the server's error table, raised from the HTTP status.

Catch `SeqserveClientError` for all of them; `retryable` says whether sending the same call again
later may succeed (the server refused it before changing anything).
"""

from __future__ import annotations


class SeqserveClientError(Exception):
    """A call the server refused, or one that never got an answer."""

    status: int | None = None
    retryable = False

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status if status is not None else type(self).status
        self.retry_after = retry_after


class InvalidInput(SeqserveClientError):
    """400: a malformed request, or one over a size limit; the message says which."""

    status = 400


class Unauthenticated(SeqserveClientError):
    """401: no API key, or an unknown one."""

    status = 401


class PermissionDenied(SeqserveClientError):
    status = 403


class NotFound(SeqserveClientError):
    """404: unknown model or version, or a session that is unknown, ended, expired or evicted."""

    status = 404


class StepConflict(SeqserveClientError):
    """409: the step does not follow the session's last one, or another writer got there first."""

    status = 409


class PayloadTooLarge(SeqserveClientError):
    status = 413


class LimitReached(SeqserveClientError):
    """429: session limits or a creation rate; worth trying again after `retry_after`."""

    status = 429
    retryable = True


class Unavailable(SeqserveClientError):
    """503: a full queue, a model not ready, the session store unreachable, or the server stopping."""

    status = 503
    retryable = True


class ServerError(SeqserveClientError):
    """500 and anything the table does not name."""

    status = 500


class ConnectionLost(SeqserveClientError):
    """The connection failed after a call that is not safe to repeat had been sent: whether the
    server applied it is unknown (a created session it made expires by its idle timeout)."""


_BY_STATUS: dict[int, type[SeqserveClientError]] = {
    cls.status: cls
    for cls in (
        InvalidInput,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        StepConflict,
        PayloadTooLarge,
        LimitReached,
        Unavailable,
    )  # fmt: skip
}


def error_for(status: int, message: str, retry_after: float | None = None) -> SeqserveClientError:
    """The typed error for an HTTP status the server answered."""
    cls = _BY_STATUS.get(status, ServerError)
    return cls(message, status, retry_after)
