"""The REST server's listening socket, which weathers running out of file descriptors.

When accept() fails for want of descriptors, asyncio stops watching the socket and retries a second
later, as it should, but first goes on calling accept() up to `backlog` times (2048 under uvicorn),
logging each failure with its traceback and scheduling a retry for each: ~5,000 log lines a second,
and retries that multiply until the server does little else. `Listener` lets one failure through
per burst and ends the burst there; `quiet_accept_failures` logs them as one line a second.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from seqserve.throttled_log import ThrottledLog

log = logging.getLogger(__name__)

_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# What asyncio's accept loop says when accept() fails for one of these (selector_events.py).
_ASYNCIO_MESSAGE = "socket.accept() out of system resource"
# Shorter than asyncio's one-second retry delay: its retry is let through, the rest of a burst is not.
_QUIET_SECONDS = 0.5


class Listener(socket.socket):
    """A listening TCP socket whose accept() fails for want of resources once per burst."""

    _quiet_until = 0.0

    def accept(self) -> tuple[socket.socket, Any]:
        try:
            return super().accept()
        except OSError as e:
            if e.errno not in _OUT_OF_RESOURCES:
                raise
            now = time.monotonic()
            if now < self._quiet_until:
                # Tells asyncio's loop that nothing is waiting: it has already stopped watching the
                # socket for this burst and scheduled its retry.
                raise BlockingIOError(errno.EAGAIN, "accept paused for want of resources") from None
            self._quiet_until = now + _QUIET_SECONDS
            raise


def listen_on(host: str, port: int) -> Listener:
    """A Listener bound to host:port (not listening yet: the event loop's server calls listen())."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = Listener(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # IPPROTO_TCP: asyncio sets TCP_NODELAY
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot serve REST on {host}:{port}: {e.strerror}") from None
    return sock


def quiet_accept_failures(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Logs accept() failures for want of resources as one line a second with a count, instead of
    a traceback each; other exceptions go where they went. Returns what undoes it."""
    previous = loop.get_exception_handler()
    out_of_resources = ThrottledLog(log, logging.ERROR)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ASYNCIO_MESSAGE:
            error = context.get("exception")
            reason = error.strerror if isinstance(error, OSError) else str(error)
            out_of_resources("REST cannot accept connections (%s): they wait in the listen queue", reason)
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
    return lambda: loop.set_exception_handler(previous)
