"""Space request starts at the tenant's rate and back off together when throttled."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio


class Pacer:
    """One pacer per run, shared by every worker: no two request starts closer than ``interval``.

    - ``interval`` starts at ``(1 + margin) / rate``: the margin keeps arrivals at Graph from
      bunching closer than the tenant's limit when the network adds a few milliseconds of jitter.
      Idle time is never banked: there are no bursts.
    - A 429 (``throttled``) slows every worker at once: the interval grows by ``slowdown`` (up to
      ``max_interval``) and the next start moves one interval from now. Only a 429 for a request
      started after the last slow-down counts: the others were sent at the old pace, so a volley
      of 429s from requests already in flight slows the pace once, not once per worker.
    - Each answer that was not throttled (``succeeded``) wins back ``recovery`` of the target
      rate, so the pace climbs back to the target within a few answers.

    Why gentle (x1.1, +10%): with a burst of 1, another app's requests make ours collide with
    them at random whatever our pace, so most 429s say "someone else just took this second",
    not "you are too fast". Slowing down hard on each one hands the other app our share and
    starves the run (modelled: x1.5 with +2% recovery kept 14% of the remaining budget, x1.1
    with +10% kept 93%); retrying at the next slot is what wins the budget back.
    - ``hold(seconds)`` honours a Retry-After for every worker.
    """

    def __init__(
        self,
        rate_per_second: float,
        *,
        margin: float = 0.02,
        slowdown: float = 1.1,
        recovery: float = 0.1,
        max_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.base_interval = (1.0 + margin) / rate_per_second
        self.interval = self.base_interval
        self.slowdown = slowdown
        self.recovery = recovery
        self.max_interval = max(max_interval, self.base_interval)
        self._clock = clock
        self._sleep = sleep
        self._next = clock()
        self._slowed_at = float("-inf")
        self.throttles = 0
        self.slowdowns = 0

    @property
    def rate(self) -> float:
        """Request starts per second at the current pace."""
        return 1.0 / self.interval

    def now(self) -> float:
        """The pacer's clock: whatever measures a request it paced reads this one."""
        return self._clock()

    async def acquire(self, cost: float = 1.0) -> float:
        """Wait for this caller's start slot; returns the start time (pass it to ``throttled``).

        ``cost`` is how much of the budget the request spends (inner requests of a JSON batch):
        the next start comes ``cost`` intervals later.
        """
        while True:
            now = self._clock()
            if now >= self._next:
                self._next = now + self.interval * cost
                return now
            await self._sleep(self._next - now)

    def departed(self, cost: float = 1.0) -> None:
        """The request granted a moment ago leaves only now (its intent took a while to commit
        to the ledger): the next start is a whole interval after this one, whatever that took.
        Without it, a slow commit before one request and a fast one before the next would let
        the two reach Graph closer together than the tenant's limit."""
        self._next = max(self._next, self._clock() + self.interval * cost)

    def throttled(self, started: float | None = None) -> None:
        """A 429 for a request started at ``started``: slow everyone down, once per episode."""
        self.throttles += 1
        now = self._clock()
        if started is not None and started < self._slowed_at:
            return  # sent before the last slow-down: that pace is already corrected
        self.slowdowns += 1
        self._slowed_at = now
        self.interval = min(self.interval * self.slowdown, self.max_interval)
        self._next = max(self._next, now + self.interval)

    def hold(self, seconds: float) -> None:
        """A Retry-After: nobody starts a request for ``seconds``."""
        self._next = max(self._next, self._clock() + seconds)

    def succeeded(self) -> None:
        """An answer that was not throttled: win back a little of the target rate."""
        base_rate = 1.0 / self.base_interval
        rate = min(base_rate, 1.0 / self.interval + self.recovery * base_rate)
        self.interval = max(self.base_interval, 1.0 / rate)
