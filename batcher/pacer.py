"""Space request starts at the tenant's rate and back off together when throttled."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio


class Pacer:
    """One pacer per run, shared by every worker: request starts are spaced ``1/rate`` apart.

    A 429 widens the spacing for everyone at once (one shared back-off, doubling up to
    ``max_interval``); each success narrows it again by ``recovery`` until it is back at the
    configured rate. ``hold(seconds)`` honours a Retry-After for every worker.
    """

    def __init__(
        self,
        rate_per_second: float,
        *,
        max_interval: float = 60.0,
        recovery: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.base_interval = 1.0 / rate_per_second
        self.interval = self.base_interval
        self.max_interval = max_interval
        self.recovery = recovery
        self._clock = clock
        self._sleep = sleep
        self._next = clock()
        self.throttles = 0

    async def acquire(self) -> None:
        """Wait for this caller's start slot."""
        while True:
            now = self._clock()
            if now >= self._next:
                self._next = now + self.interval
                return
            await self._sleep(self._next - now)

    def throttled(self) -> None:
        """A 429: double the spacing and push the next start out by it."""
        self.throttles += 1
        # Never narrower than before: a rate slower than max_interval must not speed up.
        self.interval = max(self.interval, min(self.interval * 2, self.max_interval))
        self._next = max(self._next, self._clock() + self.interval)

    def hold(self, seconds: float) -> None:
        """A Retry-After: nobody starts a request for ``seconds``."""
        self._next = max(self._next, self._clock() + seconds)

    def succeeded(self) -> None:
        """An answer that was not throttled: recover gradually toward the configured rate."""
        self.interval = max(self.base_interval, self.interval * self.recovery)
