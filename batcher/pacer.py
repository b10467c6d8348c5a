"""Space request starts within the tenant's documented limits; back off together on a 429."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio


@dataclass(frozen=True)
class Limit:
    """At most ``count`` units in ``per_seconds``, as Graph documents a limit ("3,000 writes
    per 150 s"). Modelled as a window that refills continuously (GCRA, a token bucket of
    ``count``): up to ``count`` may go at once, then ``count / per_seconds`` a second. A steady
    rate R with no burst is ``Limit(1, 1 / R)``."""

    count: float
    per_seconds: float

    @property
    def rate(self) -> float:
        """Units a second once the window is spent."""
        return self.count / self.per_seconds

    @classmethod
    def steady(cls, rate_per_second: float) -> Limit:
        """``rate_per_second`` with no burst (Identity Protection: 1 request/s)."""
        return cls(1.0, 1.0 / rate_per_second)

    def seconds_for(self, cost: float) -> float:
        """The least time ``cost`` units take from a fresh window: the window goes at once,
        the rest at the refill rate."""
        return max(0.0, cost - self.count) / self.rate


@dataclass(frozen=True)
class BudgetSpec:
    """One budget as data: every limit it must respect, and requests in flight at most."""

    limits: tuple[Limit, ...]
    at_once: int

    def seconds_for(self, cost: float) -> float:
        """The least time ``cost`` units of this budget take (its tightest limit decides)."""
        return max((limit.seconds_for(cost) for limit in self.limits), default=0.0)


DEFAULT_AT_ONCE = 4  # requests in flight at most, for a budget given as bare limits


@dataclass(frozen=True)
class Tuning:
    """How a pacer keeps clear of Graph's limits and answers a 429 (see ``Pacer``)."""

    margin: float = 0.02  # a burst-1 limit: starts spaced this much further apart
    reserve: float = 0.01  # a window: this much of it kept unused
    slowdown: float = 1.1  # a 429: the refill this much slower
    recovery: float = 0.1  # an answer not throttled: this much of the target rate won back
    max_interval: float = 60.0  # never slower than one start in this many seconds


DEFAULT_TUNING = Tuning()


class _Window:
    """One limit's GCRA state: ``tat`` is when the window would be whole again."""

    def __init__(self, limit: Limit, margin: float, reserve: float, now: float) -> None:
        # The slack keeps network jitter from bunching arrivals at Graph beyond the limit: a
        # window big enough keeps ``reserve`` of itself unused; a limit too small for that
        # (burst 1) spaces its starts ``margin`` further apart instead.
        if limit.count * reserve >= 1.0:
            self.capacity = limit.count * (1.0 - reserve)
            self.interval = 1.0 / limit.rate
        else:
            self.capacity = limit.count
            self.interval = (1.0 + margin) / limit.rate
        self.tat = now

    def wait(self, now: float, cost: float, factor: float) -> float:
        """Seconds until ``cost`` units fit (0: now)."""
        room = max(0.0, self.capacity - cost) * self.interval * factor
        return self.tat - room - now

    def spend(self, now: float, cost: float, factor: float) -> None:
        self.tat = max(self.tat, now) + cost * self.interval * factor


class Pacer:
    """One pacer per budget, shared by every worker on it: no start beyond any of its limits.

    - ``budget``: the budget's documented limits and its cap in flight (``BudgetSpec``); or
      bare limits, or a steady rate a second, with ``DEFAULT_AT_ONCE``. A window lets up to
      its size go at once: idle time refills it, at its rate. ``slot`` holds a place in flight.
    - ``tuning``: the margins and the answer to a 429 (``Tuning``).
    - A 429 (``throttled``) says Graph's window is spent: every window counts as full (no
      burst until it refills), and the refill slows by ``slowdown`` (down to one start per
      ``max_interval``). Only a 429 for a request started after the last slow-down counts:
      the others were sent at the old pace, so a volley of 429s from requests already in
      flight slows the pace once, not once per worker.
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
        budget: BudgetSpec | Sequence[Limit] | float,
        *,
        tuning: Tuning = DEFAULT_TUNING,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if isinstance(budget, int | float):
            budget = (Limit.steady(budget),)
        if not isinstance(budget, BudgetSpec):
            budget = BudgetSpec(tuple(budget), DEFAULT_AT_ONCE)
        self.limits = budget.limits
        self.at_once = budget.at_once
        now = clock()
        self._windows = [
            _Window(limit, tuning.margin, tuning.reserve, now) for limit in self.limits
        ]
        self.base_interval = max(w.interval for w in self._windows)
        self.factor = 1.0  # how much slower than the limits' refill, after 429s
        self.max_factor = max(1.0, tuning.max_interval / self.base_interval)
        self.slowdown = tuning.slowdown
        self.recovery = tuning.recovery
        self._clock = clock
        self._sleep = sleep
        self._held_until = now
        self._slowed_at = float("-inf")
        self._slots: anyio.Semaphore | None = None
        self.throttles = 0
        self.slowdowns = 0

    @property
    def interval(self) -> float:
        """Seconds per unit once the windows are spent, at the current pace."""
        return self.base_interval * self.factor

    @property
    def rate(self) -> float:
        """Units a second once the windows are spent, at the current pace."""
        return 1.0 / self.interval

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the budget's ``at_once`` places in flight."""
        if self._slots is None:
            self._slots = anyio.Semaphore(self.at_once)
        async with self._slots:
            yield

    def now(self) -> float:
        """The pacer's clock: whatever measures a request it paced reads this one."""
        return self._clock()

    async def acquire(self, cost: float = 1.0) -> float:
        """Wait until every limit has room for ``cost`` units (inner requests of a JSON batch);
        returns the start time (pass it to ``throttled``)."""
        while True:
            now = self._clock()
            wait = max(
                self._held_until - now, *(w.wait(now, cost, self.factor) for w in self._windows)
            )
            if wait <= 0:
                for window in self._windows:
                    window.spend(now, cost, self.factor)
                return now
            await self._sleep(wait)

    def departed(self, cost: float = 1.0) -> None:
        """The request granted a moment ago leaves only now (its intent took a while to commit
        to the ledger): it counts from now, whatever that took. Without it, a slow commit
        before one request and a fast one before the next would let the two reach Graph
        closer together than the tenant's limit."""
        now = self._clock()
        for window in self._windows:
            window.tat = max(window.tat, now + cost * window.interval * self.factor)

    def throttled(self, started: float | None = None) -> None:
        """A 429 for a request started at ``started``: slow everyone down, once per episode."""
        self.throttles += 1
        now = self._clock()
        if started is not None and started < self._slowed_at:
            return  # sent before the last slow-down: that pace is already corrected
        self.slowdowns += 1
        self._slowed_at = now
        self.factor = min(self.factor * self.slowdown, self.max_factor)
        for window in self._windows:  # Graph's window is spent: no burst until it refills
            window.tat = max(window.tat, now + window.capacity * window.interval * self.factor)

    def hold(self, seconds: float) -> None:
        """A Retry-After: nobody starts a request for ``seconds``."""
        self._held_until = max(self._held_until, self._clock() + seconds)

    def succeeded(self) -> None:
        """An answer that was not throttled: win back a little of the target rate."""
        self.factor = max(1.0, 1.0 / min(1.0, 1.0 / self.factor + self.recovery))


class KeyedPacers:
    """One ``Pacer`` per key (Outlook's budget is per mailbox), created on demand from one
    ``BudgetSpec``; at most ``open_keys`` kept, the least recently used idle one dropped first
    (a dropped mailbox's window has refilled by the time it comes back, or nearly)."""

    def __init__(
        self,
        budget: BudgetSpec,
        open_keys: int,
        *,
        tuning: Tuning = DEFAULT_TUNING,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.spec = budget
        self.open_keys = open_keys
        self.at_once = budget.at_once  # per key
        self._tuning, self._clock, self._sleep = tuning, clock, sleep
        self._pacers: dict[str, Pacer] = {}  # in use order: the last is the latest
        self.created = 0

    def get(self, key: str) -> Pacer:
        """The pacer of ``key``, made on first use."""
        pacer = self._pacers.pop(key, None)
        if pacer is None:
            pacer = Pacer(self.spec, tuning=self._tuning, clock=self._clock, sleep=self._sleep)
            self.created += 1
            self._evict()
        self._pacers[key] = pacer
        return pacer

    def __len__(self) -> int:
        return len(self._pacers)

    def _evict(self) -> None:
        for key in list(self._pacers):
            if len(self._pacers) < self.open_keys:
                return
            slots = self._pacers[key]._slots
            if slots is None or slots.value == self.at_once:  # nobody in flight on it
                del self._pacers[key]
