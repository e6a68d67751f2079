"""Running the reading of an untrusted model file in a child process, under a time and memory limit.

libhdf5 is C: a damaged file can make it crash (SIGSEGV) or loop forever, which no Python `except`
catches (found by tests/fuzz). In a forked child, a crash or a hang costs the child only, and the
caller gets a clean error instead of a dead or stuck `seqserve export`.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")


class ReaderCrashed(Exception):
    """The child died without an answer (a signal, or the memory limit's kill)."""


class ReaderTimedOut(Exception):
    """The child did not answer within the time limit; it has been killed."""


def call_isolated(function: Callable[..., T], *args: Any, timeout: float, memory_bytes: int) -> T:
    """`function(*args)` in a forked child, its result (or exception) returned here through a pipe.

    The child may allocate `memory_bytes` beyond what it inherited; past that its allocations fail
    with MemoryError. Where fork is not available (macOS, Windows), the call runs here, unprotected.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        return function(*args)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, function, args, memory_bytes), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise ReaderTimedOut(f"no answer in {timeout:g} s")
        try:
            ok, value = receiver.recv()
        except EOFError:
            child.join(5)
            raise ReaderCrashed(_how_it_ended(child.exitcode)) from None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()
    if ok:
        return value
    raise value


def _child(sender: Connection, function: Callable[..., Any], args: tuple[Any, ...], memory_bytes: int) -> None:
    faulthandler.disable()  # a crash here is reported by the parent, not dumped by the child
    _limit_memory(memory_bytes)
    try:
        answer: tuple[bool, Any] = (True, function(*args))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
        answer = (False, e)
    try:
        sender.send(answer)
    except Exception as e:  # noqa: BLE001 - an exception that does not pickle: send its words
        sender.send((False, RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}") if not answer[0] else e))
    finally:
        sender.close()


def _limit_memory(extra: int) -> None:
    try:
        import resource

        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[0])
        size = pages * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (size + extra, resource.RLIM_INFINITY))
    except (ImportError, OSError, ValueError):
        pass  # no /proc or no rlimit: the time limit still holds


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"
