"""A rate per caller: a token bucket for each API key, in this process (each replica counts its own)."""

from __future__ import annotations

import time
from collections.abc import Callable

from seqserve.errors import LimitExceeded


class PerKeyRate:
    """At most `per_second` events per key on average, `burst` at once; 0 per second: no bound."""

    def __init__(
        self, what: str, per_second: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what, self.per_second = what, per_second
        self.burst = max(1.0, per_second) if burst is None else burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key name -> (tokens, when counted)

    def take(self, key: str, count: int = 1) -> None:
        """Counts `count` events of `key`, all or none; LimitExceeded (429, with when to retry) past the rate."""
        if self.per_second <= 0:
            return
        if count > self.burst:  # waiting would never help
            raise LimitExceeded(f"API key '{key}' {self.what} at most {self.burst:g} at once; {count} were asked for")
        now = self._clock()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.per_second)
        if tokens < count:
            wait = (count - tokens) / self.per_second
            self._buckets[key] = (tokens, now)
            raise LimitExceeded(
                f"API key '{key}' {self.what} faster than {self.per_second:g} per second; retry in {wait:.2g} s",
                retry_after=wait,
            )
        self._buckets[key] = (tokens - count, now)
