"""Token buckets: Graph's per-tenant request budgets, and another app that shares one.

A documented window ("3,000 writes per 150 s") is a bucket of 3,000 that refills at 20 a
second: up to the window may go at once, and a longer run averages out to the window's rate.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable


class TokenBucket:
    """A budget of ``rate`` requests a second, at most ``burst`` at once, on ``clock``.

    With ``other_share`` > 0, another app in the tenant wants that share of the budget: its
    requests come at random (Poisson) times, and one that finds the bucket empty takes the next
    token the moment it refills, before ours, as an app retrying at once would.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        other_share: float = 0.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._rng = rng or random.Random()
        self._other_rate = other_share * rate
        self._other_next = (
            self._last + self._rng.expovariate(self._other_rate) if self._other_rate else math.inf
        )
        self._other_waiting = 0
        self.other_served = 0

    def _refill(self, to: float) -> None:
        self._tokens = min(self.burst, self._tokens + (to - self._last) * self.rate)
        self._last = to

    def _run_other_app(self, until: float) -> None:
        while True:
            full = self._last + max(0.0, (1 - self._tokens) / self.rate)
            ready = full if self._other_waiting else math.inf
            step = min(self._other_next, ready)
            if step > until:
                return
            self._refill(step)
            if step == self._other_next:
                self._other_waiting += 1
                self._other_next += self._rng.expovariate(self._other_rate)
            if self._other_waiting and self._tokens >= 1 - 1e-9:
                self._tokens -= 1
                self._other_waiting -= 1
                self.other_served += 1

    def _catch_up(self) -> None:
        now = self._clock()
        self._run_other_app(now)
        self._refill(now)

    def take(self) -> bool:
        self._catch_up()
        if self._tokens >= 1 - 1e-9:
            self._tokens -= 1
            return True
        return False

    def retry_after(self, least: float = 1.0) -> str:
        """A Retry-After header's value: seconds until a token is free, at least ``least``.
        Graph's are whole seconds, at least 1 (the default); ``least`` under 1 (a bench that
        speeds the budgets up shortens it by the same factor) gives fractional seconds."""
        self._catch_up()
        wait = max(0.0, (1 - self._tokens) / self.rate)
        if least >= 1:
            return str(max(math.ceil(least), math.ceil(wait)))
        return f"{max(least, wait):.6f}"
