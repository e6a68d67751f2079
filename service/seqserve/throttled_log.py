"""A log message that a flood could repeat thousands of times a second, written at most once per
interval with the count of the repeats left out since the last one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ThrottledLog:
    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.level, self.interval = logger, level, interval
        self._clock = clock
        self._last: float | None = None
        self._left_out = 0

    def __call__(self, message: str, *args: object, exc_info: bool = False) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            self._left_out += 1
            return
        if self._left_out:
            message += " (%d more like it since the last such message)"
            args = (*args, self._left_out)
        self.logger.log(self.level, message, *args, exc_info=exc_info)
        self._last, self._left_out = now, 0
