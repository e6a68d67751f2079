"""A Python client for seqserve's sessions: create, step, fork, rewind, export and import states.

Sync (`Client`, `Session`) and asyncio (`AsyncClient`, `AsyncSession`), over HTTP with the V2 binary
tensor extension; steps are numbered, so a step whose answer was lost is sent again and applied
once (`seqserve.client.calls`). Errors are typed (`seqserve.client.errors`). Needs `httpx`
(`pip install seqserve[client]`).
"""

from seqserve.client.aio import AsyncClient, AsyncSession
from seqserve.client.calls import RetryPolicy, SessionInfo
from seqserve.client.errors import (
    ConnectionLost,
    InvalidInput,
    LimitReached,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    SeqserveClientError,
    ServerError,
    StepConflict,
    Unauthenticated,
    Unavailable,
)
from seqserve.client.sync import Client, Session

__all__ = [
    "AsyncClient", "AsyncSession", "Client", "ConnectionLost", "InvalidInput", "LimitReached", "NotFound",
    "PayloadTooLarge", "PermissionDenied", "RetryPolicy", "SeqserveClientError", "ServerError", "Session",
    "SessionInfo", "StepConflict", "Unauthenticated", "Unavailable",
]  # fmt: skip
