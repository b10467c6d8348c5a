"""One paced Graph call (``Caller``) and what the run's calls share (``Control`` and its parts)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import anyio

from batcher import failpoints
from batcher.actions import Budget
from batcher.errors import (
    AuthError,
    BatcherError,
    Forbidden,
    GraphError,
    NotConnected,
    Throttled,
    Unauthorized,
    Unreachable,
)
from batcher.eventlog import Event, Observer, no_events
from batcher.graph import answer_of
from batcher.ledger import Answer
from batcher.pacer import Pacer
from batcher.retries import backoff, retry_policy

T = TypeVar("T")
UNREACHABLE_AFTER = 30.0  # seconds of attempts without any HTTP answer before the run stops
WINDOW = 60.0  # seconds over which rates are observed


class NotSent(Exception):
    """A stop was asked for while this request waited for its turn: nothing left, nothing
    was recorded; its steps stay as they were for a resume."""


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
    def ended(self) -> bool:
        """No new request may start: a stop was asked for, or the breaker tripped."""
        return self.stops.asked or self.breaker.tripped is not None


def refused(what: str, exc: GraphError, needs: str, then: str = "") -> str:
    """What the breaker says when Graph refused ``what`` for want of a permission (403, 401):
    Graph's answer, what the app or user ``needs``, and to run the same command once granted."""
    return (
        f"Graph refused {what} ({exc.status} {exc.code or 'Forbidden'}, "
        f"request-id {exc.request_id or 'none'}): the app or user needs {needs}; "
        f"grant it, then run the same command{then}"
    )


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


class StopSignal:
    """How the CLI edge (a signal handler) or a test asks a run to stop; safe in a signal
    handler. Outside a send it raises KeyboardInterrupt: nothing is in flight to wait for."""

    def __init__(self) -> None:
        self.asked = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control: Control | None = None

    def ask(self) -> None:
        self.asked += 1
        if self._loop is None or self._control is None:
            raise KeyboardInterrupt
        self._loop.call_soon_threadsafe(self._control.stop)

    @contextlib.contextmanager
    def attached(self, control: Control) -> Iterator[None]:
        """While sending: a stop asked for reaches ``control`` (call inside the event loop)."""
        self._loop, self._control = asyncio.get_running_loop(), control
        try:
            yield
        finally:
            self._loop = self._control = None


@dataclass
class Call(Generic[T]):
    """One request to pace: its budget and cost, how to send it, and the ledger's hooks.

    ``before(client_request_id)`` records the intent once the budget granted the request;
    ``after(answer, error)`` records Graph's answer (error None: accepted).
    """

    budget: Budget
    send: Callable[[str], Awaitable[T]]
    permission: str
    cost: float = 1.0
    before: Callable[[str], None] = lambda crid: None
    after: Callable[[Answer, GraphError | None], None] = lambda answer, exc: None
    fields: Mapping[str, Any] = field(default_factory=dict)  # for the request event


@dataclass(frozen=True)
class RetrySettings:
    retry_for_seconds: float
    backoff: tuple[float, float] = (1.0, 30.0)
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep

    def next_try(
        self, first_sent: float, tries: int, now: float, *, paced: bool = False
    ) -> float | None:
        """When to send again a request inside a JSON batch that was first sent at
        ``first_sent`` and tried ``tries`` times: None once ``retry_for_seconds`` have passed
        since then (give up), else after a back-off (``paced``: none; the shared pacer's hold
        spaces it, as for a 429 with Retry-After)."""
        if now - first_sent >= self.retry_for_seconds:
            return None
        return now if paced else now + backoff(tries, *self.backoff)


@dataclass(frozen=True)
class _Sent(Generic[T]):
    """What one request got: its result (accepted) or Graph's error, as the ledger's answer."""

    result: T | None
    answer: Answer
    error: GraphError | None


class Caller:
    """Sends calls through their budget's pacer, retried by time on transient answers. Layered:
    ``__call__`` (retry) -> ``_paced`` (turn, stop, intent) -> ``_sent`` (in flight, send,
    answer) -> ``_answered`` (record, then pacer, breaker and observer, each in one place)."""

    def __init__(
        self, pacers: Mapping[Budget, Pacer], retry: RetrySettings, control: Control
    ) -> None:
        self.pacers = pacers
        self.retry = retry
        self.control = control

    async def __call__(self, call: Call[T]) -> T:
        policy = retry_policy(
            self.retry.retry_for_seconds,
            sleep=self.retry.sleep,
            initial_backoff=self.retry.backoff[0],
            max_backoff=self.retry.backoff[1],
        )
        async for attempt in policy:
            with attempt:
                return await self._slotted(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def workers(self, budgets: Iterable[Budget]) -> int:
        """How many requests a lane on ``budgets`` may keep in flight: the largest cap."""
        return max((self.pacers[b].at_once for b in budgets), default=1)

    async def _slotted(self, call: Call[T]) -> T:
        """Hold one of the budget's places in flight (its cap) for the whole request."""
        async with self.pacers[call.budget].slot():
            return await self._paced(call)

    async def _paced(self, call: Call[T]) -> T:
        """Wait for the budget's turn; a stop meanwhile leaves it unsent (NotSent), else its
        intent is recorded before it goes."""
        pacer = self.pacers[call.budget]
        started = await pacer.acquire(call.cost)
        if self.control.ended:
            raise NotSent
        crid = str(uuid.uuid4())
        call.before(crid)
        pacer.departed(call.cost)
        failpoints.hit("send.after_intent")
        sent = await self._sent(call, crid)
        self._answered(call, pacer, crid, started, sent)
        if sent.error is not None:
            raise sent.error
        return cast(T, sent.result)

    async def _sent(self, call: Call[T], crid: str) -> _Sent[T]:
        """Send it, counted in flight meanwhile: Graph's answer or error, mapped once."""
        self.control.tally.requested()
        try:
            with self.control.flight.one():
                result = await call.send(crid)
        except GraphError as exc:
            return _Sent(None, answer_of(exc), exc)
        except AuthError as exc:  # a token refused or not renewed (BearerAuth): stop the run
            self.control.breaker.trip(exc)
            raise
        status, request_id = getattr(result, "status", 200), getattr(result, "request_id", None)
        return _Sent(result, answer_of(None, status, request_id), None)

    def _answered(
        self, call: Call[T], pacer: Pacer, crid: str, started: float, sent: _Sent[T]
    ) -> None:
        """A request got an HTTP answer or none: record it, then feed it back."""
        failpoints.hit("send.after_answer")
        call.after(sent.answer, sent.error)
        self._to_pacer(pacer, sent.error, started)
        self._to_breaker(sent.error, call.permission)
        self._event(call, pacer, crid, sent.answer, started)

    def inner_throttled(self, budget: Budget, retry_afters: list[float]) -> None:
        """Inner answers of a JSON batch said 429: one slow-down for the volley, and every
        worker on that budget holds for the longest Retry-After."""
        if not retry_afters:
            return
        pacer = self.pacers[budget]
        self.control.tally.throttled += len(retry_afters)
        pacer.throttled()
        pacer.hold(max(retry_afters))

    def _to_pacer(self, pacer: Pacer, exc: GraphError | None, started: float) -> None:
        """A 429 slows the budget down (and is counted); a Retry-After holds it."""
        if isinstance(exc, Throttled):
            self.control.tally.throttled += 1
            pacer.throttled(started)
        if exc is not None and exc.retry_after is not None:
            pacer.hold(exc.retry_after)
        elif exc is None:
            pacer.succeeded()

    def _to_breaker(self, exc: GraphError | None, permission: str) -> None:
        """No connection for too long, or a 403 or 401 for the whole request, trips it."""
        self.control.reach.reached(exc)
        if isinstance(exc, Forbidden | Unauthorized):
            needs = f"the Graph permission {permission}"
            self.control.breaker.trip(AuthError(refused("the request", exc, needs)))

    def _event(
        self, call: Call[T], pacer: Pacer, crid: str, answer: Answer, started: float
    ) -> None:
        self.control.observer(
            Event.REQUEST,
            **call.fields,
            budget=call.budget.value,
            outcome=answer.outcome.value,
            http_status=answer.http_status,
            error_code=answer.error_code,
            error_message=answer.error_message,
            request_id=answer.request_id,
            client_request_id=crid,
            latency_ms=round(1000 * (pacer.now() - started), 1),  # one clock: the pacer's
            rate_per_second=round(pacer.rate, 4),
            throttled_so_far=self.control.tally.throttled,
        )
