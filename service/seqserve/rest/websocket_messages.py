"""The messages of WebSocket streaming (`seqserve.rest.websocket`): one V2 request or answer per message.

A text message is a V2 JSON request or response, exactly the body of `POST .../infer` and its answer.
A binary message is the binary tensor extension's body with the JSON's length in front of it, where
REST has the `Inference-Header-Content-Length` header:

    uint32, little-endian: N | N bytes: the JSON header | the tensors' bytes, in the order the JSON lists them

An answer is binary when one of its outputs is (asked for with `binary_data_output` or an output's
`binary_data`), text otherwise, whatever the request was. A failure is always a text answer:
`{"error": message, "status": HTTP status of the error table, "id": the request's id}` (`id` when
the request had a readable one; `retry_after` in seconds where the error says when to retry).
"""

from __future__ import annotations

import struct
from typing import Any

import pydantic_core
from starlette.types import Message, Receive, Scope, Send

from seqserve.errors import InvalidInput, PayloadTooLarge, SeqserveError
from seqserve.rest.binary_extension import HEADER_LENGTH
from seqserve.rest.error_handlers import seqserve_error_response

JSON_LENGTH = struct.Struct("<I")
# RFC 6455 close codes.
GOING_AWAY = 1001
POLICY_VIOLATION = 1008


def request_body(message: Message, limit: int) -> tuple[bytes, str | None]:
    """The body of a received message as REST would have it, and the JSON length REST's header
    would give (None: all JSON); InvalidInput or PayloadTooLarge for the client."""
    text = message.get("text")
    data: bytes = text.encode() if text is not None else (message.get("bytes") or b"")
    # uvicorn refuses longer messages itself (its ws_max_size); this holds under any server.
    if len(data) > limit:
        raise PayloadTooLarge(f"message of {len(data)} bytes is over the limit of {limit} bytes")
    if text is not None:
        return data, None
    if len(data) < JSON_LENGTH.size:
        raise InvalidInput(
            f"a binary message starts with its JSON header's length ({JSON_LENGTH.size} bytes, little-endian); "
            f"this one has {len(data)} bytes"
        )
    (length,) = JSON_LENGTH.unpack_from(data)
    rest = len(data) - JSON_LENGTH.size
    if not 0 < length <= rest:
        raise InvalidInput(
            f"a binary message's JSON header length is {length}, but {rest} bytes follow it; "
            f"expected a length between 1 and {rest}"
        )
    return data[JSON_LENGTH.size :], str(length)


def answer_message(content: bytes, headers: dict[str, str]) -> Message:
    """The message carrying an encoded V2 response (`seqserve.rest.encode.encode_response`)."""
    length = headers.get(HEADER_LENGTH)
    if length is None:
        return {"type": "websocket.send", "text": content.decode()}
    return {"type": "websocket.send", "bytes": JSON_LENGTH.pack(int(length)) + content}


def error_message(status: int, message: str, request_id: str | None, retry_after: float | None = None) -> Message:
    document: dict[str, Any] = {"error": message, "status": status}
    if request_id is not None:
        document["id"] = request_id
    if retry_after is not None:
        document["retry_after"] = retry_after
    return {"type": "websocket.send", "text": pydantic_core.to_json(document).decode()}


def seqserve_error_message(error: SeqserveError, request_id: str | None) -> Message:
    return error_message(int(error.http_status), error.message, request_id, error.retry_after)


async def refuse_upgrade(
    scope: Scope, receive: Receive, send: Send, error: SeqserveError, headers: dict[str, str] | None = None
) -> None:
    """Answers an upgrade request with the error's HTTP status and V2 error body, before accepting it.

    Where the server cannot send an HTTP answer to an upgrade (the ASGI denial response extension),
    the close before accept that every server has: 403 to the client, 1008 in the ASGI terms.
    """
    if "websocket.http.response" in scope.get("extensions", {}):
        await seqserve_error_response(error, headers)(scope, receive, send)
    else:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": error.message[:120]})
