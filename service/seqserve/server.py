"""Wires settings, store, runtime and data plane together and runs the REST and gRPC servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from seqserve.config import Settings
from seqserve.dataplane import BatchingOptions, DataPlane
from seqserve.runtime.providers import resolve_providers
from seqserve.runtime.session import OrtModel, session_options
from seqserve.sessions.manager import SessionManager
from seqserve.sessions.stores import MemoryStateStore, StateStore
from seqserve.store.model_store import Loader, ModelStore
from seqserve.store.signature import Signature

log = logging.getLogger(__name__)


def model_loader(settings: Settings) -> Loader:
    """How the store turns a version directory into a runnable, warmed-up model."""
    providers = resolve_providers(settings.device, settings.cuda_tf32)

    def load(model_path: Path, signature: Signature) -> OrtModel:
        options = session_options(settings.intra_op_threads, settings.inter_op_threads, settings.allow_spinning)
        model = OrtModel(model_path, signature, providers, options)
        if settings.warmup:
            model.warm_up()
        return model

    return load


def state_store(settings: Settings) -> StateStore:
    if settings.sessions == "memory":
        return MemoryStateStore(
            max_sessions=settings.max_sessions,
            max_bytes=settings.max_session_bytes,
            idle_timeout=settings.max_sequence_idle,
            eviction_grace=settings.session_eviction_grace,
        )
    if settings.sessions.startswith(("redis://", "rediss://", "unix://")):
        from seqserve.sessions.redis_store import RedisStateStore

        return RedisStateStore(
            settings.sessions,
            max_sessions=settings.max_sessions,
            idle_timeout=settings.max_sequence_idle,
            eviction_grace=settings.session_eviction_grace,
        )
    raise ValueError(f"unknown session store {settings.sessions!r}; expected 'memory' or 'redis://host:port/db'")


def build_dataplane(settings: Settings) -> DataPlane:
    store = ModelStore(settings.store, model_loader(settings), drain_seconds=settings.max_sequence_idle)
    store.scan()
    sessions = SessionManager(state_store(settings), max_pending=settings.max_pending_per_session)
    batching = BatchingOptions(
        enabled=settings.batching,
        max_batch_size=settings.max_batch_size,
        max_queue_delay=settings.max_queue_delay,
        sequence_batch_delay=settings.sequence_batch_delay,
        compute=settings.batch_compute,
    )
    return DataPlane(store, sessions, inline_max_elements=settings.inline_max_elements, batching=batching)


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
