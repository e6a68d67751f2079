"""The REST server of `seqserve serve`: the app in uvicorn, started and stopped gracefully."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn

from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.rest.app import create_app


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # seqserve handles SIGTERM and SIGINT itself (seqserve.server.serve): uvicorn's own handling
        # would stop REST alone, then re-raise the signal, so the process would not exit 0.
        yield


class RestFrontEnd:
    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        config = uvicorn.Config(
            create_app(dataplane, settings),
            host=settings.host,
            port=settings.http_port,
            log_level=settings.log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)),
        )
        self.server = _Uvicorn(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name="seqserve-rest")
        while not self.server.started:
            if self._task.done():
                await self._task  # it failed to start: raise what it raised
                raise RuntimeError("the REST server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self, grace: float) -> None:
        """Closes the listening socket and idle connections at once; requests in flight have up to
        `grace` seconds (set in the config) to finish."""
        self.server.should_exit = True
        if self._task is not None:
            await self._task
