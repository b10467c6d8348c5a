"""What the lanes of one run share (``Control``), a part a concern: stop, breaker, reach, tally."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import anyio

from batcher.errors import BatcherError, GraphError, NotConnected, Unreachable
from batcher.eventlog import Event, Observer, no_events

UNREACHABLE_AFTER = 30.0  # seconds of attempts without any HTTP answer before the run stops
WINDOW = 60.0  # seconds over which rates are observed


@dataclass
class Tally:
    """Running counts, readable while the run goes on; rates are observed, not targets."""

    settled: dict[str, dict[str, int]] = field(default_factory=dict)  # action -> state -> n
    requests: int = 0
    throttled: int = 0
    started: float = field(default_factory=time.monotonic)
    _done_times: deque[tuple[float, int]] = field(default_factory=deque)
    _request_times: deque[float] = field(default_factory=deque)

    def count(self, action: str, state: str, n: int = 1) -> None:
        per = self.settled.setdefault(action, {})
        per[state] = per.get(state, 0) + n
        self._done_times.append((time.monotonic(), n))

    def requested(self) -> None:
        self.requests += 1
        self._request_times.append(time.monotonic())

    def total(self, state: str | None = None) -> int:
        return sum(n for per in self.settled.values() for s, n in per.items() if state in (None, s))

    def rates(self) -> tuple[float, float]:
        """(steps settled per second, requests per second) over the last minute."""
        now = time.monotonic()
        while self._done_times and now - self._done_times[0][0] > WINDOW:
            self._done_times.popleft()
        while self._request_times and now - self._request_times[0] > WINDOW:
            self._request_times.popleft()
        span = min(WINDOW, max(now - self.started, 1e-3))
        return sum(n for _, n in self._done_times) / span, len(self._request_times) / span


class Cancel:
    """The cancel scope around a run's tasks: cancelled now, or by a deadline. Cancelled
    before it opens, it is cancelled as it opens."""

    def __init__(self) -> None:
        self._scope: anyio.CancelScope | None = None
        self._pending = False

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self._pending:
                scope.cancel()
            yield
        self._scope = None

    def now(self) -> None:
        if self._scope is None:
            self._pending = True
        else:
            self._scope.cancel()

    def within(self, seconds: float) -> None:
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, anyio.current_time() + seconds)


class Stopping:
    """A stop asked for (first time): start no new request and let the ones in flight finish
    within ``grace`` seconds (at once when none is); second time: now."""

    def __init__(self, grace: float, observer: Observer, cancel: Cancel) -> None:
        self.grace = grace
        self.asked = False
        self._observer = observer
        self._cancel = cancel

    def ask(self, in_flight: int) -> None:
        first = not self.asked
        self.asked = True
        self._observer(Event.STOPPING, first=first, in_flight=in_flight, grace=self.grace)
        if not first or in_flight == 0:
            self._cancel.now()
        else:
            self._cancel.within(self.grace)

    def idle(self) -> None:
        """No request is in flight any more: once a stop waits only for those, nothing else
        (a back-off, the pacer) keeps the run going."""
        if self.asked:
            self._cancel.now()


class Breaker:
    """Stops everything now: signing in, permissions or the network must be fixed first. The
    first error that tripped it is kept."""

    def __init__(self, cancel: Cancel) -> None:
        self.tripped: BatcherError | None = None
        self._cancel = cancel

    def trip(self, exc: BatcherError) -> None:
        if self.tripped is None:
            self.tripped = exc
        self._cancel.now()


class InFlight:
    """How many requests are out (sent, no answer yet); ``idle`` is called when none is left."""

    def __init__(self, idle: Callable[[], None]) -> None:
        self.count = 0
        self._idle = idle

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle()


class Reachability:
    """Whether Graph answers. When no connection can be made (refused, name not resolved, no
    route), say so at once, and trip the breaker once that has lasted ``after`` seconds (by
    ``clock``) with no HTTP answer in between (at once for a TLS certificate that is not
    trusted): at the start of a run or in its middle alike."""

    def __init__(
        self,
        breaker: Breaker,
        observer: Observer,
        after: float = UNREACHABLE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.after = after  # seconds without any HTTP answer
        self.answered = False  # Graph gave some HTTP answer (any status) in this run
        self._breaker = breaker
        self._observer = observer
        self._clock = clock
        self._unreached_since: float | None = None  # first connect failure since an answer

    def reached(self, exc: GraphError | None) -> None:
        """Note an answer (``exc`` None: accepted)."""
        if not isinstance(exc, NotConnected):
            self.answered = True
            self._unreached_since = None  # any HTTP answer: Graph is reachable again
            return
        now = self._clock()
        tls = "TLS" in exc.cause
        if self._unreached_since is None:
            self._unreached_since = now
            stop_after = 0.0 if tls else self.after
            self._observer(
                Event.UNREACHABLE,
                host=exc.host,
                cause=exc.cause,
                advice=_advice(exc),
                stop_after=stop_after,
            )
        if tls or now - self._unreached_since >= self.after:
            waited = "" if tls else f" for {self.after:g}s"
            self._breaker.trip(
                Unreachable(
                    f"cannot reach {exc.host}{waited}: {exc.cause}; {_advice(exc)}; nothing "
                    "more was sent, and the same command resumes"
                )
            )


class Control:
    """What the lanes of one run share, one part a concern: the ``stops`` asked for, the
    ``breaker``, the requests in ``flight``, the ``reach`` of Graph, the ``tally`` and the
    ``observer``. ``scope`` wraps the run's tasks: the breaker and a stop cancel them."""

    def __init__(
        self,
        grace: float = 35.0,
        observer: Observer = no_events,
        unreachable_after: float = UNREACHABLE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        cancel = Cancel()
        self.observer = observer
        self.tally = Tally()
        self.stops = Stopping(grace, observer, cancel)
        self.breaker = Breaker(cancel)
        self.flight = InFlight(self.stops.idle)
        self.reach = Reachability(self.breaker, observer, unreachable_after, clock)
        self.scope = cancel.scope

    def stop(self) -> None:
        """A stop asked for (the CLI's Ctrl-C, or a test)."""
        self.stops.ask(self.flight.count)

    @property
    def stop_asked(self) -> bool:
        return self.stops.asked

    @property
    def tripped(self) -> BatcherError | None:
        """Why the breaker tripped (it stops the run), None while it has not."""
        return self.breaker.tripped

    def trip(self, exc: BatcherError) -> None:
        self.breaker.trip(exc)

    def count(self, action: str, state: str, n: int) -> None:
        """Count ``n`` steps settled in ``state`` (negative: taken back)."""
        self.tally.count(action, state, n)

    def progress(self) -> None:
        """Tell the observer the tally so far."""
        self.observer(Event.PROGRESS, tally=self.tally)

    @property
    def ended(self) -> bool:
        """No new request may start: a stop was asked for, or the breaker tripped."""
        return self.stops.asked or self.breaker.tripped is not None


def _advice(exc: NotConnected) -> str:
    if "TLS" in exc.cause:
        return (
            "if a proxy inspects TLS, set [auth] ca_bundle to its CA certificates (PEM; it "
            "applies to sign-in and Graph)"
        )
    if "proxy" in exc.cause:
        return "check HTTPS_PROXY and NO_PROXY, and the proxy's credentials and rules"
    if "DNS" in exc.cause:
        return "check the host name ([graph] cloud or base_url), DNS, or the proxy (HTTPS_PROXY)"
    return "check [graph] base_url, the network, the firewall or the proxy (HTTPS_PROXY, NO_PROXY)"
