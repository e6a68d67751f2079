"""Wires settings, store, runtime and data plane together and runs the REST and gRPC servers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from typing import Protocol

from seqserve.auth import ApiKeys, Authenticator
from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.errors import InvalidInput
from seqserve.metrics import Metrics
from seqserve.runner import RunnerFactory
from seqserve.sessions.manager import SessionManager
from seqserve.sessions.stores import MemoryStateStore, StateStore
from seqserve.store.model_store import ModelStore
from seqserve.throttled_log import ThrottledLog
from seqserve.validation import RequestLimits

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
        timeout=settings.session_store_timeout,
        max_copies=settings.session_copies,
        max_copy_bytes=settings.max_session_bytes,
    )


def build_dataplane(settings: Settings) -> DataPlane:
    """The store (loading every version's runner), the session manager and the data plane over them."""
    metrics = Metrics()
    sessions = SessionManager(state_store(settings), max_pending=settings.max_pending_per_session)

    def in_use(name: str, version: int) -> bool | None:
        count = sessions.store.sessions_on(name, version)
        return None if count is None else count > 0

    store = ModelStore(
        settings.store,
        RunnerFactory(settings, metrics),
        drain_seconds=settings.max_sequence_idle,
        in_use=in_use,
        models=_models_at_start(settings),
    )
    store.scan(store.served)
    keys = None if settings.api_keys_file is None else ApiKeys(settings.api_keys_file)
    auth = Authenticator(
        keys,
        settings.open_to_anyone,
        settings.max_sessions,
        settings.max_sessions_per_key,
        settings.session_creations_per_key,
        settings.model_controllers,
    )
    return DataPlane(store, sessions, metrics, auth, RequestLimits.from_settings(settings))


def _models_at_start(settings: Settings) -> list[str] | None:
    """The models served from the start under explicit control (None: every model, polled)."""
    if settings.model_control == "poll":
        return None
    in_store = sorted(d.name for d in settings.store.iterdir() if d.is_dir()) if settings.store.is_dir() else []
    names = settings.models_at_start
    if names is None:
        return [name for name in in_store if not name.startswith(".")]
    missing = [name for name in names if name not in in_store]
    if missing:
        raise InvalidInput(f"SEQSERVE_LOAD_MODELS names {', '.join(missing)}, not in the model store {settings.store}")
    return names


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
    # A failure that lasts (out of file descriptors, an unmounted volume) fails every scan: its
    # traceback once a minute is enough.
    failed = ThrottledLog(log, logging.ERROR, interval=60)
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(dataplane.store.scan)
        except Exception:  # a scan that fails now may succeed next time; never stop following
            failed("rescanning the model store failed", exc_info=True)


async def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down gracefully and returns.

    On the signal, readiness turns false and both front ends refuse new work at once (the REST
    listener closes; new gRPC calls get UNAVAILABLE, which load balancers and clients retry on
    another replica); requests in flight and open streams get `shutdown_grace` seconds, streams
    ending at a request boundary. Every answered step's state was written before its answer, so
    nothing answered is lost. A second signal exits at once.
    """
    dataplane = build_dataplane(settings)
    front_ends: list[FrontEnd] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        if settings.grpc_port:
            from seqserve.grpc.server import GrpcFrontEnd

            front_ends.append(GrpcFrontEnd(dataplane, settings))
        if settings.http_port:
            from seqserve.rest.server import RestFrontEnd

            front_ends.append(RestFrontEnd(dataplane, settings))
        for front_end in front_ends:
            await front_end.start()
        # What start-up made (modules, models, the front ends) lives as long as the process: frozen,
        # a full collection no longer walks it. Unfrozen, each one paused every stream ~25 ms, and
        # they were what a step's p99 latency measured.
        gc.freeze()
        log.info(
            "serving REST on %s:%d, gRPC on %s:%d (0: off)",
            settings.host, settings.http_port, settings.host, settings.grpc_port,
        )  # fmt: skip
        # Under explicit control the scans re-read nothing, but unloaded versions still drain.
        follow_every = settings.store_poll_seconds or (1.0 if settings.model_control == "explicit" else 0)
        if follow_every > 0:
            tasks.append(asyncio.create_task(_follow_store(dataplane, follow_every)))
        # Also refreshes the session counts /metrics reports, so it runs without an idle timeout too.
        sweep_every = min(max(settings.max_sequence_idle / 4, 0.05), 10.0) if settings.max_sequence_idle > 0 else 10.0
        tasks.append(asyncio.create_task(_sweep_sessions(dataplane, sweep_every)))
        signal_name = await _signalled()
        log.info("%s: shutting down; requests in flight have %g s", signal_name, settings.shutdown_grace)
        dataplane.catalog.stopping = True
        await asyncio.gather(*(front_end.stop(settings.shutdown_grace) for front_end in front_ends))
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await dataplane.close()
    log.info("stopped")


class FrontEnd(Protocol):
    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...


async def _signalled() -> str:
    """Waits for SIGTERM or SIGINT; returns its name. A second one ends the process at once."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()

    def on_signal(number: signal.Signals) -> None:
        if received.done():
            log.warning("%s again: exiting now, without waiting for requests in flight", number.name)
            os._exit(1)
        received.set_result(number.name)

    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, on_signal, number)
    return await received
