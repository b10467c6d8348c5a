"""Send batches: workers sharing a pacer, retries, bad-batch isolation, the auth breaker."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from batcher import failpoints
from batcher.errors import (
    AuthError,
    BadRequest,
    Forbidden,
    GraphError,
    LedgerError,
    NoAnswer,
    ServerError,
    Throttled,
    Unauthorized,
)
from batcher.eventlog import EventSink, no_events
from batcher.ledger import Answer, Ledger, State
from batcher.pacer import Pacer
from batcher.retries import RETRYABLE, retry_policy

if TYPE_CHECKING:  # imported only for types: httpx loads when a run sends, not at start-up
    from batcher.graph import GraphClient

PERMISSION_HINT = (
    "the app or user needs the Graph permission IdentityRiskyUser.ReadWrite.All "
    "(admin-consented; with delegated sign-in the user also needs the Security Administrator role)"
)


@dataclass
class Tally:
    """Running counts, readable while the run goes on."""

    confirmed: int = 0
    failed: int = 0
    unknown: int = 0
    requests: int = 0
    throttled: int = 0
    rate: float = 0.0  # the pacer's current request rate
    started: float = field(default_factory=time.monotonic)

    @property
    def settled(self) -> int:
        return self.confirmed + self.failed + self.unknown


@dataclass(frozen=True)
class SendOutcome:
    confirmed: int
    failed: int
    unknown: int
    requests: int
    throttled: int
    seconds: float
    stopped_by: AuthError | None
    interrupted: bool = False


# After this many batches were split down to single IDs and every one was refused, a 400 is
# taken to be about the request, not the IDs: later batches fail whole instead of costing
# 2n-1 requests each at one request a second.
HOPELESS_AFTER = 2


class _NotSent(Exception):
    """A stop was asked for while this batch waited for its turn: it is left for a resume."""


class AuthBreaker:
    """Trips on a 403, or on a 401 that a fresh sign-in cannot fix.

    ``refused_after_refresh`` tells whether Graph refused a token fetched after a 401 (see
    auth.TokenSource). Without it, two 401s in a row trip the breaker. Either way, five 401s in
    a row trip it, so no sign-in loop can run on.
    """

    def __init__(self, refused_after_refresh: Callable[[], bool] | None = None) -> None:
        self._refused_after_refresh = refused_after_refresh
        self._unauthorized_in_a_row = 0
        self.tripped: AuthError | None = None

    def record(self, exc: GraphError | None) -> None:
        if exc is None:
            self._unauthorized_in_a_row = 0
        elif isinstance(exc, Forbidden):
            self.tripped = AuthError(
                f"Graph refused the action (403 {exc.code or 'Forbidden'}, request-id "
                f"{exc.request_id or 'none'}): {PERMISSION_HINT}; then run the same command"
            )
        elif isinstance(exc, Unauthorized):
            self._unauthorized_in_a_row += 1
            hopeless = (
                self._refused_after_refresh()
                if self._refused_after_refresh is not None
                else self._unauthorized_in_a_row >= 2
            )
            if hopeless or self._unauthorized_in_a_row >= 5:
                self.tripped = AuthError(
                    f"Graph refused the token twice, even after a refresh (401 "
                    f"{exc.code or 'Unauthorized'}, request-id {exc.request_id or 'none'}); "
                    "sign in again or get a fresh token for this tenant's Graph, "
                    "then run the same command"
                )


class Sender:
    """Sends batches through ``max_in_flight`` workers sharing one pacer and one ledger.

    ``stop()`` (or, with ``handle_signals``, the first Ctrl-C or SIGTERM) starts no new request,
    lets requests in flight finish for up to ``grace_seconds`` and returns; a second signal
    cancels at once. Either way every unsent or unanswered ID stays resumable in the ledger.
    """

    def __init__(
        self,
        ledger: Ledger,
        client: GraphClient,
        pacer: Pacer,
        *,
        action: str,
        max_in_flight: int,
        retry_for_seconds: float,
        backoff: tuple[float, float] = (1.0, 30.0),
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        on_settled: Callable[[Tally], None] | None = None,
        handle_signals: bool = False,
        grace_seconds: float = 30.0,
        on_stop: Callable[[bool], None] | None = None,
        log: EventSink = no_events,
        refused_after_refresh: Callable[[], bool] | None = None,
    ) -> None:
        self._ledger = ledger
        self._client = client
        self._pacer = pacer
        self._action = action
        self._max_in_flight = max_in_flight
        self._retry_for_seconds = retry_for_seconds
        self._backoff = backoff
        self._sleep = sleep
        self._on_settled = on_settled
        self._handle_signals = handle_signals
        self._grace_seconds = grace_seconds
        self._on_stop = on_stop
        self._log = log
        self._breaker = AuthBreaker(refused_after_refresh)
        self._feeding = anyio.CancelScope()
        self._everything = anyio.CancelScope()
        self.stopping = False
        self._hopeless_batches = 0
        self.tally = Tally(rate=pacer.rate)

    async def run(self, batches: Iterable[list[str]]) -> SendOutcome:
        try:
            with self._everything:
                await self._run(batches)
        except* LedgerError as group:
            raise _first_leaf(group) from None
        t = self.tally
        return SendOutcome(
            confirmed=t.confirmed,
            failed=t.failed,
            unknown=t.unknown,
            requests=t.requests,
            throttled=t.throttled,
            seconds=time.monotonic() - t.started,
            stopped_by=self._breaker.tripped,
            interrupted=self.stopping,
        )

    async def _run(self, batches: Iterable[list[str]]) -> None:
        send, receive = anyio.create_memory_object_stream[list[str]](0)
        async with anyio.create_task_group() as tg:
            if self._handle_signals:
                tg.start_soon(self._watch_signals)
            async with anyio.create_task_group() as workers:
                for _ in range(self._max_in_flight):
                    workers.start_soon(self._worker, receive.clone())
                receive.close()
                with self._feeding:
                    async with send:
                        for batch in batches:
                            await send.send(batch)
                await send.aclose()  # also when feeding was cancelled mid-send
            tg.cancel_scope.cancel()  # the signal watcher

    def stop(self) -> None:
        """Start no new request; let the ones in flight finish within the grace period."""
        if self.stopping:
            self._everything.cancel()
            return
        self.stopping = True
        self._feeding.cancel()
        self._everything.deadline = anyio.current_time() + self._grace_seconds

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if self._on_stop is not None:
                    self._on_stop(not self.stopping)  # True for the first signal
                self.stop()

    async def _worker(self, batches: anyio.abc.ObjectReceiveStream[list[str]]) -> None:
        async with batches:
            async for user_ids in batches:
                if self.stopping:
                    return
                await self._send(user_ids)

    async def _send(self, user_ids: Sequence[str], *, whole: bool = True) -> int:
        """Send one batch until it settles; on a 400 split it to isolate the bad IDs.

        Returns how many of its IDs were confirmed. ``whole`` is false for the halves of a split.
        """
        batch_id = self._ledger.start_batch(user_ids)
        self._log("state", batch=batch_id, ids=len(user_ids), state=State.SENDING.value)
        try:
            policy = retry_policy(
                self._retry_for_seconds,
                sleep=self._sleep,
                initial_backoff=self._backoff[0],
                max_backoff=self._backoff[1],
            )
            async for attempt in policy:
                with attempt:
                    await self._attempt(batch_id, user_ids)
        except _NotSent:
            return 0  # left "sending": a resume sends it
        except AuthError as exc:  # sign-in failed while renewing the token
            self._breaker.tripped = exc
            self._everything.cancel()
            return 0  # left "sending": a resume sends it once sign-in works
        except BadRequest as exc:
            if len(user_ids) == 1 or self._hopeless_batches >= HOPELESS_AFTER:
                # A single ID, or 400s that refuse whole batches: no more splitting.
                self._settle(batch_id, State.FAILED, exc, len(user_ids))
                return 0
            self._ledger.split_batch(batch_id)
            middle = len(user_ids) // 2
            confirmed = await self._send(user_ids[:middle], whole=False)
            confirmed += await self._send(user_ids[middle:], whole=False)
            if whole and confirmed == 0:  # every ID refused: the 400 is not about the IDs
                self._hopeless_batches += 1
            return confirmed
        except GraphError as exc:
            if self._breaker.tripped is not None:
                return 0  # left "sending": a resume sends it again once sign-in is fixed
            # Out of retry time on a transient answer, the IDs may or may not have been
            # applied (unknown: a resume re-sends them); any other answer is permanent.
            state = State.UNKNOWN if isinstance(exc, RETRYABLE) else State.FAILED
            self._settle(batch_id, state, exc, len(user_ids))
            return 0
        self.tally.confirmed += len(user_ids)
        self._notify()
        return len(user_ids)

    async def _attempt(self, batch_id: int, user_ids: Sequence[str]) -> None:
        started = await self._pacer.acquire()
        if self.stopping:
            raise _NotSent  # nothing recorded: the batch stays as it was for a resume
        client_request_id = str(uuid.uuid4())
        attempt_id = self._ledger.start_attempt(batch_id, client_request_id)
        failpoints.hit("send.after_intent")
        self.tally.requests += 1
        try:
            accepted = await self._client.post_action(self._action, user_ids, client_request_id)
        except GraphError as exc:
            failpoints.hit("send.after_answer")
            answer = _answer(exc)
            self._ledger.finish_attempt(attempt_id, batch_id, answer)
            self._feedback(exc, started)
            self._log_request(batch_id, attempt_id, user_ids, client_request_id, answer, started)
            raise
        failpoints.hit("send.after_answer")
        answer = Answer("accepted", http_status=accepted.status, request_id=accepted.request_id)
        self._ledger.finish_attempt(attempt_id, batch_id, answer, settle=State.CONFIRMED)
        self._feedback(None, started)
        self._log_request(batch_id, attempt_id, user_ids, client_request_id, answer, started)
        self._log("state", batch=batch_id, ids=len(user_ids), state=State.CONFIRMED.value)

    def _log_request(
        self,
        batch_id: int,
        attempt_id: int,
        user_ids: Sequence[str],
        client_request_id: str,
        answer: Answer,
        started: float,
    ) -> None:
        self._log(
            "request",
            batch=batch_id,
            attempt=attempt_id,
            ids=len(user_ids),
            outcome=answer.outcome,
            http_status=answer.http_status,
            error_code=answer.error_code,
            error_message=answer.error_message,
            request_id=answer.request_id,
            client_request_id=client_request_id,
            latency_ms=round(1000 * (time.monotonic() - started), 1),
            rate_per_second=round(self._pacer.rate, 4),
            throttled_so_far=self.tally.throttled,
        )

    def _feedback(self, exc: GraphError | None, started: float) -> None:
        if isinstance(exc, Throttled):
            self.tally.throttled += 1
            self._pacer.throttled(started)
        elif exc is not None and exc.retry_after is not None:
            self._pacer.hold(exc.retry_after)
        elif exc is None:
            self._pacer.succeeded()
        self.tally.rate = self._pacer.rate
        self._breaker.record(exc)
        if self._breaker.tripped is not None:
            self._everything.cancel()

    def _settle(self, batch_id: int, state: State, exc: GraphError, size: int) -> None:
        self._ledger.settle_batch(batch_id, state, _answer(exc))
        self._log("state", batch=batch_id, ids=size, state=state.value, error_code=exc.code)
        if state is State.FAILED:
            self.tally.failed += size
        else:
            self.tally.unknown += size
        self._notify()

    def _notify(self) -> None:
        if self._on_settled is not None:
            self._on_settled(self.tally)


_OUTCOMES: dict[type[GraphError], str] = {
    Throttled: "throttled",
    ServerError: "server_error",
    NoAnswer: "no_answer",
    BadRequest: "bad_request",
    Unauthorized: "unauthorized",
    Forbidden: "forbidden",
}


def _answer(exc: GraphError) -> Answer:
    return Answer(
        _OUTCOMES.get(type(exc), "rejected"),
        http_status=exc.status,
        error_code=exc.code,
        error_message=exc.message,
        request_id=exc.request_id,
    )


def _first_leaf(group: BaseExceptionGroup[LedgerError]) -> LedgerError:
    """The first LedgerError in a (possibly nested) group from the task groups."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
