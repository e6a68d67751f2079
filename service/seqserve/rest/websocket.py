"""WebSocket streaming: `/v2/models/{name}[/versions/{version}]/stream` carries V2 inference requests
and their answers, one per message, in order (`seqserve.rest.websocket_messages` has the framing).

It is the infer endpoint over one long-lived connection, for clients that cannot keep a gRPC stream,
browsers first: the same decoding (`seqserve.rest.decode`), data plane, batching, limits, API keys
and error table. Each message is a request with Triton's sequence parameters (`sequence_id`,
`sequence_start`, `sequence_end`, `sequence_step`), so one socket carries one sequence or several
multiplexed by id; each answer carries its request's `id`.

- Answers come in the order of the requests. Requests of different sequences (and stateless ones)
  run together, so that they batch; the requests of one sequence run one after another.
- A bad message, or a request that fails, is answered with an error and fails alone; the socket stays open.
  (A text message that is not UTF-8 is the exception: RFC 6455 has the protocol close the socket, 1007.)
- Each message is held to `max_request_bytes` (a larger one closes the socket with 1009, Message Too Big);
  at most `websocket_max_in_flight` requests of a socket are read and unanswered at once, the rest wait in TCP.
- With API keys on, the upgrade request needs one: `Authorization: Bearer <key>`, or, from a browser,
  which cannot set headers on a WebSocket, the subprotocol `base64url.bearer.seqserve.<key, base64url>`
  next to `seqserve.v2`, which the server then selects (`seqserve.rest.auth`). Without one: HTTP 401.
- The upgrade is refused with 404 for an unknown model or version, 503 once the server stops.
- When the server stops (`stop`), each socket stops reading, answers the requests it has read and
  closes with 1001 (Going Away): every request answered was applied, none after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.routing import WebSocketRoute
from starlette.types import Message, Receive, Scope, Send

from seqserve.dataplane import DataPlane
from seqserve.errors import ModelNotReady, SeqserveError
from seqserve.inference import InferRequest
from seqserve.rest.auth import owner_of
from seqserve.rest.decode_offload import BodyDecoder, DecodeFailed
from seqserve.rest.encode import encode_answer
from seqserve.rest.error_handlers import unexpected_error_message
from seqserve.rest.inference import log_failure
from seqserve.rest.websocket_messages import (
    GOING_AWAY,
    answer_message,
    error_message,
    refuse_upgrade,
    request_body,
    seqserve_error_message,
)
from seqserve.sessions.control import SEQUENCE_ID

log = logging.getLogger(__name__)

STREAM_PATHS = ("/v2/models/{name}/stream", "/v2/models/{name}/versions/{version}/stream")
SUBPROTOCOL = "seqserve.v2"
STOPPING = "server shutting down: every request answered was applied, none after it"  # <= 123 bytes


class StreamEndpoint:
    """The ASGI app behind both stream paths, and the registry of the sockets it holds open."""

    def __init__(self, dataplane: DataPlane, max_request_bytes: int, max_in_flight: int = 16) -> None:
        self.dataplane = dataplane
        self.max_request_bytes = max_request_bytes
        # Requests of one socket read and not yet answered; a client that pipelines more waits in TCP.
        self.max_in_flight = max_in_flight
        self.decoder = BodyDecoder()  # large messages are decoded off the event loop, as REST bodies are
        self._open: dict[_Socket, asyncio.Task[object]] = {}
        self._stopping = False

    def routes(self) -> list[WebSocketRoute]:
        return [WebSocketRoute(path, self) for path in STREAM_PATHS]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        name, version = params["name"], params.get("version")
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            if self._stopping:
                raise ModelNotReady("the server is shutting down; connect to another replica", retry_after=1.0)
            self.dataplane.store.find(name, version)  # 404 now, rather than on every message
        except SeqserveError as e:
            await refuse_upgrade(scope, receive, send, e)
            return
        socket = _Socket(self, receive, send, name, version, owner_of(scope))
        task = asyncio.current_task()
        assert task is not None
        self._open[socket] = task  # before the accept: a stop while it is sent still reaches the socket
        try:
            subprotocol = SUBPROTOCOL if SUBPROTOCOL in scope.get("subprotocols", ()) else None
            await send({"type": "websocket.accept", "subprotocol": subprotocol})
            await socket.run()
        finally:
            del self._open[socket]

    async def stop(self) -> None:
        """Ends every open socket at a request boundary (module docstring); returns once all are closed."""
        self._stopping = True
        for socket in self._open:
            socket.stop()
        if self._open:
            await asyncio.wait(list(self._open.values()))


class _Socket:
    """One accepted WebSocket: a reader that decodes requests and starts them, and `run`, which
    sends their answers in order."""

    def __init__(
        self, endpoint: StreamEndpoint, receive: Receive, send: Send, name: str, version: str | None, owner: str | None
    ) -> None:
        self.endpoint, self.receive, self.send = endpoint, receive, send
        self.name, self.version, self.owner = name, version, owner
        self.slots = asyncio.Semaphore(endpoint.max_in_flight)
        # The answers to come, in request order; None after the last one.
        self.answers: asyncio.Queue[asyncio.Future[Message] | None] = asyncio.Queue()
        # The last request started of each sequence: the next one of it waits for it.
        self.last_of_sequence: dict[str, asyncio.Task[Message]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.waiting = False  # the reader waits for the client's next message
        self.stopping = False
        self.connected = True

    def stop(self) -> None:
        self.stopping = True
        if self.waiting and self.reader is not None:
            self.reader.cancel()  # else the reader stops after the message it is starting

    async def run(self) -> None:
        self.reader = asyncio.create_task(self._read())
        try:
            while (answer := await self.answers.get()) is not None:
                message = await answer  # never raises: a failure is an error answer
                self.slots.release()
                if self.connected:
                    try:
                        await self.send(message)
                    except OSError:  # uvicorn's ClientDisconnected: the rest is computed, not sent
                        self.connected = False
        finally:
            if not self.reader.done():  # this task was cancelled: the server's grace is over
                self.reader.cancel()
                while not self.answers.empty():
                    pending = self.answers.get_nowait()
                    if pending is not None:
                        pending.cancel()
        if self.stopping and self.connected:
            with contextlib.suppress(OSError):
                await self.send({"type": "websocket.close", "code": GOING_AWAY, "reason": STOPPING})

    async def _read(self) -> None:
        try:
            while not self.stopping:
                self.waiting = True
                try:
                    await self.slots.acquire()
                    message = await self.receive()
                finally:
                    self.waiting = False
                if message["type"] == "websocket.disconnect":
                    self.connected = False
                    return
                self.answers.put_nowait(await self._start(message))
        except asyncio.CancelledError:
            if not self.stopping:
                raise
        finally:
            self.answers.put_nowait(None)

    async def _start(self, message: Message) -> asyncio.Future[Message]:
        """The future answer to one message: decoded here, in message order, so that each sequence's
        requests are chained in the order they came; run as a task of its own."""
        try:
            body, header_length = request_body(message, self.endpoint.max_request_bytes)
            request = await self.endpoint.decoder.decode(body, header_length, self.name, self.version)
        except DecodeFailed as e:
            log_failure(e.request_id, self.name, self.version, e.error)
            return _ready(seqserve_error_message(e.error, e.request_id))
        except SeqserveError as e:
            log_failure(None, self.name, self.version, e)
            return _ready(seqserve_error_message(e, None))
        request.owner = self.owner
        sequence = request.parameters.get(SEQUENCE_ID)
        key = None if sequence in (None, 0, "") else str(sequence)  # 42 and "42" wait for each other: harmless
        previous = None if key is None else self.last_of_sequence.get(key)
        task = asyncio.create_task(self._answer(request, previous))
        if key is not None:
            self.last_of_sequence[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return task

    def _forget(self, key: str, done: asyncio.Task[Message]) -> None:
        if self.last_of_sequence.get(key) is done:
            del self.last_of_sequence[key]

    async def _answer(self, request: InferRequest, previous: asyncio.Task[Message] | None) -> Message:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own answer's business
        try:
            response = await self.endpoint.dataplane.infer(request)  # which logs its own failures
            try:
                content, headers = await encode_answer(request, response)
            except SeqserveError as e:
                log_failure(request.id, self.name, self.version, e)
                raise
        except SeqserveError as e:
            return seqserve_error_message(e, request.id)
        except Exception as e:  # a bug: the client gets the class name only, the log the traceback
            log.exception("WebSocket request for model %s failed unexpectedly", self.name)
            return error_message(500, unexpected_error_message(e), request.id)
        return answer_message(content, headers)


def _ready(message: Message) -> asyncio.Future[Message]:
    future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    future.set_result(message)
    return future
