"""One paced Graph call: wait for its budget, record the intent, call, feed the pacer and breaker.

Every sender lane and verify go through ``Caller``; they share one ``Control``: the stop asked
for, the breaker, how many requests are in flight, and whether Graph was ever reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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


class Control:
    """What the lanes of one run share. ``stop`` (first time): start no new request and let the
    ones in flight finish within ``grace`` seconds (at once when none is); second time: now."""

    def __init__(
        self,
        grace: float = 35.0,
        observer: Observer = no_events,
        unreachable_after: float = UNREACHABLE_AFTER,
    ) -> None:
        self.grace = grace
        self.observer = observer
        self.unreachable_after = unreachable_after  # seconds without any HTTP answer
        self.tally = Tally()
        self.stopping = False
        self.tripped: BatcherError | None = None
        self.in_flight = 0
        self.answered = False  # Graph gave some HTTP answer (any status) in this run
        self._unreached_since: float | None = None  # first connect failure since an answer
        self._scope: anyio.CancelScope | None = None

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Wrap the run's tasks: ``trip`` and a second stop cancel them."""
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self.tripped is not None or (self.stopping and self.in_flight == 0):
                scope.cancel()
            yield
        self._scope = None

    def stop(self) -> None:
        first = not self.stopping
        self.stopping = True
        self.observer(Event.STOPPING, first=first, in_flight=self.in_flight, grace=self.grace)
        if self._scope is None:
            return
        if not first or self.in_flight == 0:
            self._scope.cancel()
        else:
            self._scope.deadline = min(self._scope.deadline, anyio.current_time() + self.grace)

    def landed(self) -> None:
        """A request got its answer (or none). Once a stop waits only for the requests in
        flight and none is left, nothing else (a back-off, the pacer) keeps the run going."""
        self.in_flight -= 1
        if self.stopping and self.in_flight == 0 and self._scope is not None:
            self._scope.cancel()

    def trip(self, exc: BatcherError) -> None:
        """Stop everything now: signing in, permissions or the network must be fixed first."""
        if self.tripped is None:
            self.tripped = exc
        if self._scope is not None:
            self._scope.cancel()

    def reached(self, exc: GraphError | None) -> None:
        """Note an answer. When no connection can be made (refused, name not resolved, no
        route), say so at once, and stop once that has lasted ``unreachable_after`` seconds
        with no HTTP answer in between (at once for a TLS certificate that is not trusted):
        at the start of a run or in its middle alike."""
        if not isinstance(exc, NotConnected):
            self.answered = True
            self._unreached_since = None  # any HTTP answer: Graph is reachable again
            return
        now = time.monotonic()
        tls = "TLS" in exc.cause
        if self._unreached_since is None:
            self._unreached_since = now
            self.observer(
                Event.UNREACHABLE,
                host=exc.host,
                cause=exc.cause,
                advice=_advice(exc),
                stop_after=0.0 if tls else self.unreachable_after,
            )
        if tls or now - self._unreached_since >= self.unreachable_after:
            waited = "" if tls else f" for {self.unreachable_after:g}s"
            self.trip(
                Unreachable(
                    f"cannot reach {exc.host}{waited}: {exc.cause}; {_advice(exc)}; nothing "
                    "more was sent, and the same command resumes"
                )
            )


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


class Caller:
    """Sends calls through their budget's pacer, retried by time on transient answers."""

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
                return await self._once(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _once(self, call: Call[T]) -> T:
        pacer = self.pacers[call.budget]
        started = await pacer.acquire(call.cost)
        if self.control.stopping or self.control.tripped is not None:
            raise NotSent
        crid = str(uuid.uuid4())
        call.before(crid)
        pacer.departed(call.cost)
        failpoints.hit("send.after_intent")
        self.control.tally.requested()
        self.control.in_flight += 1
        try:
            result = await call.send(crid)
        except GraphError as exc:
            self._answered(call, pacer, crid, started, answer_of(exc), exc)
            raise
        except AuthError as exc:  # a token refused or not renewed (BearerAuth): stop the run
            self.control.landed()
            self.control.trip(exc)
            raise
        except BaseException:
            self.control.landed()
            raise
        answer = answer_of(
            None, getattr(result, "status", 200), getattr(result, "request_id", None)
        )
        self._answered(call, pacer, crid, started, answer, None)
        return result

    def _answered(
        self,
        call: Call[T],
        pacer: Pacer,
        crid: str,
        started: float,
        answer: Answer,
        exc: GraphError | None,
    ) -> None:
        """A request got an HTTP answer or none (``exc`` None: accepted): record it, feed the
        pacer and the breaker, tell the observer."""
        failpoints.hit("send.after_answer")
        self.control.landed()
        call.after(answer, exc)
        self._feedback(pacer, exc, started, call)
        self._event(call, pacer, crid, answer, started)

    def inner_throttled(self, budget: Budget, retry_afters: list[float]) -> None:
        """Inner answers of a JSON batch said 429: one slow-down for the volley, and every
        worker on that budget holds for the longest Retry-After."""
        if not retry_afters:
            return
        pacer = self.pacers[budget]
        self.control.tally.throttled += len(retry_afters)
        pacer.throttled()
        pacer.hold(max(retry_afters))

    def _feedback(
        self, pacer: Pacer, exc: GraphError | None, started: float, call: Call[T]
    ) -> None:
        self.control.reached(exc)
        if isinstance(exc, Throttled):
            self.control.tally.throttled += 1
            pacer.throttled(started)
        if exc is not None and exc.retry_after is not None:
            pacer.hold(exc.retry_after)
        elif exc is None:
            pacer.succeeded()
        if isinstance(exc, Forbidden | Unauthorized):
            needs = f"the Graph permission {call.permission}"
            self.control.trip(AuthError(refused("the request", exc, needs)))

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
            latency_ms=round(1000 * (time.monotonic() - started), 1),
            rate_per_second=round(pacer.rate, 4),
            throttled_so_far=self.control.tally.throttled,
        )
