"""Wires settings, store, runtime and data plane together and runs the REST and gRPC servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.metrics import Metrics
from seqserve.runner import RunnerFactory
from seqserve.sessions.manager import SessionManager
from seqserve.sessions.stores import MemoryStateStore, StateStore
from seqserve.store.model_store import ModelStore

log = logging.getLogger(__name__)


def state_store(settings: Settings) -> StateStore:
    if settings.sessions == "memory":
        return MemoryStateStore(
            max_sessions=settings.max_sessions,
            max_bytes=settings.max_session_bytes,
            idle_timeout=settings.max_sequence_idle,
            eviction_grace=settings.session_eviction_grace,
        )
    from seqserve.sessions.redis_store import RedisStateStore

    return RedisStateStore(
        settings.sessions,
        max_sessions=settings.max_sessions,
        idle_timeout=settings.max_sequence_idle,
        eviction_grace=settings.session_eviction_grace,
    )


def build_dataplane(settings: Settings) -> DataPlane:
    """The store (loading every version's runner), the session manager and the data plane over them."""
    metrics = Metrics()
    sessions = SessionManager(state_store(settings), max_pending=settings.max_pending_per_session)

    def in_use(name: str, version: int) -> bool | None:
        count = sessions.store.sessions_on(name, version)
        return None if count is None else count > 0

    store = ModelStore(
        settings.store, RunnerFactory(settings, metrics), drain_seconds=settings.max_sequence_idle, in_use=in_use
    )
    store.scan()
    return DataPlane(store, sessions, metrics)


async def _sweep_sessions(dataplane: DataPlane, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            dropped = await dataplane.sessions.store.sweep()
            if dropped:
                log.info("dropped %d idle sessions", dropped)
        except Exception:
            log.exception("sweeping idle sessions failed")


async def _follow_store(dataplane: DataPlane, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(dataplane.store.scan)
        except Exception:  # a scan that fails now may succeed next time; never stop following
            log.exception("rescanning the model store failed")


async def serve(settings: Settings) -> None:
    """Runs until cancelled (SIGINT/SIGTERM stop uvicorn, which ends this)."""
    dataplane = build_dataplane(settings)
    tasks: list[asyncio.Task[None]] = []
    grpc_server = None
    if settings.grpc_port:
        from seqserve.grpc.server import create_grpc_server

        grpc_server = create_grpc_server(dataplane, settings)
        await grpc_server.start()
        log.info("gRPC listening on %s:%d", settings.host, settings.grpc_port)
    if settings.store_poll_seconds > 0:
        tasks.append(asyncio.create_task(_follow_store(dataplane, settings.store_poll_seconds)))
    if settings.max_sequence_idle > 0:
        sweep_every = min(max(settings.max_sequence_idle / 4, 0.05), 10.0)
        tasks.append(asyncio.create_task(_sweep_sessions(dataplane, sweep_every)))
    try:
        if settings.http_port:
            import uvicorn

            from seqserve.rest.app import create_app

            config = uvicorn.Config(
                create_app(dataplane, settings),
                host=settings.host,
                port=settings.http_port,
                log_level=settings.log_level.lower(),
                access_log=False,
            )
            await uvicorn.Server(config).serve()
        elif grpc_server is not None:
            await grpc_server.wait_for_termination()
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if grpc_server is not None:
            await grpc_server.stop(grace=1.0)
        await dataplane.close()
