"""Every failure as a V2 error body `{"error": "..."}` with the status of the one error table."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from seqserve.errors import SeqserveError


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def seqserve_error_response(error: SeqserveError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The answer to a SeqserveError: its status and message, and `Retry-After` when it says when."""
    headers = dict(headers or {})
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return error_response(error.http_status, error.message, headers or None)


async def _seqserve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SeqserveError)
    return seqserve_error_response(exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's own errors: unknown route (404), wrong method (405). Same body shape as ours.
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no endpoint {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return error_response(400, f"invalid request: {problems}")


def unexpected_error_message(exc: Exception) -> str:
    # A bug, not a client error: the client gets the class name only, never the message's internals.
    return f"internal server error: {type(exc).__name__}"


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises the exception after this response, so uvicorn logs the traceback once.
    return error_response(500, unexpected_error_message(exc))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SeqserveError, _seqserve_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
