"""Reading untrusted files in a child: its crash, hang or memory blow-up is an exception here."""

from __future__ import annotations

import os
import signal
import time

import pytest

from seqserve.errors import ExportError
from seqserve.keras.isolation import ReaderCrashed, ReaderTimedOut, call_isolated


def _crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _loop() -> None:
    while True:
        time.sleep(0.01)


def _allocate(size: int) -> int:
    return len(bytearray(size))


def _refuse() -> None:
    raise ExportError("model.h5: layer 'lstm': no weights")


def test_result_comes_back() -> None:
    assert call_isolated(_allocate, 1000, timeout=30, memory_bytes=2**30) == 1000


def test_exception_comes_back_as_itself() -> None:
    with pytest.raises(ExportError, match="layer 'lstm': no weights"):
        call_isolated(_refuse, timeout=30, memory_bytes=2**30)


def test_crash_is_an_exception_naming_the_signal() -> None:
    with pytest.raises(ReaderCrashed, match=f"signal {int(signal.SIGSEGV)}"):
        call_isolated(_crash, timeout=30, memory_bytes=2**30)


def test_hang_is_killed_at_the_time_limit() -> None:
    with pytest.raises(ReaderTimedOut):
        call_isolated(_loop, timeout=0.5, memory_bytes=2**30)


def test_allocation_past_the_memory_limit_fails_in_the_child() -> None:
    with pytest.raises(MemoryError):
        call_isolated(_allocate, 2**33, timeout=30, memory_bytes=2**30)
