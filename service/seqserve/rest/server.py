"""The REST server of `seqserve serve`: the app in uvicorn, started and stopped gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator

import uvicorn
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.rest.app import create_app
from seqserve.rest.connections import ConnectionPolicy, LimitedHttpProtocol
from seqserve.rest.listener import listen_on, quiet_accept_failures
from seqserve.rest.websocket import StreamEndpoint
from seqserve.rest.websocket_protocol import WebSocketProtocol


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # seqserve handles SIGTERM and SIGINT itself (seqserve.server.serve): uvicorn's own handling
        # would stop REST alone, then re-raise the signal, so the process would not exit 0.
        yield


class _QuietDisconnects:
    """A route reading its body through Starlette raises ClientDisconnect when the client went away
    or was cut off by the body read timeout: there is no one left to answer, and nothing to log
    (uvicorn would log each as an application error, with its traceback)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(ClientDisconnect):
            await self.app(scope, receive, send)


class RestFrontEnd:
    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        policy = ConnectionPolicy(settings.header_read_timeout, settings.body_read_timeout, settings.max_connections)
        app = create_app(dataplane, settings)
        self.streams: StreamEndpoint = app.state.streams
        config = uvicorn.Config(
            _QuietDisconnects(app),
            host=settings.host,
            port=settings.http_port,
            http=functools.partial(LimitedHttpProtocol, policy=policy),  # type: ignore[arg-type]
            ws=WebSocketProtocol,
            log_level=settings.log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)),
            ws_max_size=settings.max_request_bytes,  # per WebSocket message, inflated (1009 above it)
        )
        self.server = _Uvicorn(config)
        self._task: asyncio.Task[None] | None = None
        self._loud_again: Callable[[], None] | None = None

    async def start(self) -> None:
        # Our own listening socket, so that running out of descriptors does not flood the log.
        listener = listen_on(self.server.config.host, self.server.config.port)
        self._loud_again = quiet_accept_failures(asyncio.get_running_loop())
        self._task = asyncio.create_task(self.server.serve(sockets=[listener]), name="seqserve-rest")
        while not self.server.started:
            if self._task.done():
                await self._task  # it failed to start: raise what it raised
                raise RuntimeError("the REST server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self, grace: float) -> None:
        """Closes the listening socket and idle connections at once; requests in flight have up to
        `grace` seconds (set in the config) to finish. WebSockets first: each closes with 1001 after
        the requests it has read; uvicorn's shutdown would close them at once with 1012, mid-request."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.streams.stop(), grace)
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        if self._loud_again is not None:
            self._loud_again()
