"""One paced Graph call (``Caller``): its turn, its intent, its answer, fed back to ``Control``."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import anyio

from batcher import failpoints
from batcher.actions import Budget
from batcher.control import Control
from batcher.errors import AuthError, Forbidden, GraphError, Throttled, Unauthorized
from batcher.eventlog import Event
from batcher.graph import answer_of
from batcher.ledger import Answer
from batcher.pacer import KeyedPacers, Pacer
from batcher.retries import backoff, retry_policy

T = TypeVar("T")


class NotSent(Exception):
    """A stop was asked for while this request waited for its turn: nothing left, nothing
    was recorded; its steps stay as they were for a resume."""


def refused(what: str, exc: GraphError, needs: str, then: str = "") -> str:
    """What the breaker says when Graph refused ``what`` for want of a permission (403, 401):
    Graph's answer, what the app or user ``needs``, and to run the same command once granted."""
    return (
        f"Graph refused {what} ({exc.status} {exc.code or 'Forbidden'}, "
        f"request-id {exc.request_id or 'none'}): the app or user needs {needs}; "
        f"grant it, then run the same command{then}"
    )


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

    ``before(client_request_id)`` records the intent once the budget granted the request (it
    may return an awaitable: the request leaves once it is done, e.g. a group commit);
    ``after(answer, error)`` records Graph's answer (error None: accepted).
    """

    budget: Budget
    send: Callable[[str], Awaitable[T]]
    permission: str
    cost: float = 1.0
    before: Callable[[str], Awaitable[None] | None] = lambda crid: None
    after: Callable[[Answer, GraphError | None], None] = lambda answer, exc: None
    fields: Mapping[str, Any] = field(default_factory=dict)  # for the request event
    key: str = ""  # a budget Graph counts per mailbox: the mailbox (its user's ID)


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
        self,
        pacers: Mapping[Budget, Pacer | KeyedPacers],
        retry: RetrySettings,
        control: Control,
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

    def users_at_once(self, budget: Budget) -> int:
        """How many users' list-then-act steps on ``budget`` may run at once, each sending one
        request at a time: its cap in flight; per mailbox, as many mailboxes as are kept open."""
        pacer = self.pacers[budget]
        return pacer.open_keys if isinstance(pacer, KeyedPacers) else pacer.at_once

    async def _slotted(self, call: Call[T]) -> T:
        """Hold one of the budget's places in flight (its cap) for the whole request."""
        async with self.pacer(call.budget, call.key).slot():
            return await self._paced(call)

    async def _paced(self, call: Call[T]) -> T:
        """Wait for the budget's turn; a stop meanwhile leaves it unsent (NotSent), else its
        intent is recorded before it goes."""
        pacer = self.pacer(call.budget, call.key)
        started = await pacer.acquire(call.cost)
        if self.control.ended:
            raise NotSent
        crid = str(uuid.uuid4())
        intent = call.before(crid)
        if intent is not None:
            await intent
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

    def pacer(self, budget: Budget, key: str = "") -> Pacer:
        """The pacer a call on ``budget`` waits for (per ``key``, for a per-mailbox budget)."""
        pacer = self.pacers[budget]
        return pacer.get(key) if isinstance(pacer, KeyedPacers) else pacer

    def inner_throttled(self, budget: Budget, retry_afters: list[float], started: float) -> None:
        """Inner answers of a JSON batch that left at ``started`` (the pacer's clock) said 429:
        one slow-down for the volley (batches sent before the last slow-down add none), and
        every worker on that budget holds for the longest Retry-After."""
        if not retry_afters:
            return
        pacer = self.pacer(budget)
        self.control.tally.throttled += len(retry_afters)
        pacer.throttled(started)
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
