"""Send the planned batches: workers, pacing, retries, bad-batch isolation, ledger records."""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import polars as pl
from rich.console import Console

from batcher.auth import StaticToken, TokenSource, tenant_of, token_source
from batcher.clouds import ACTION_CONFIRM, CLOUDS
from batcher.config import Settings
from batcher.errors import (
    AuthError,
    BadRequest,
    Forbidden,
    GraphError,
    NoAnswer,
    ServerError,
    Throttled,
    Unauthorized,
)
from batcher.graph import GraphClient
from batcher.inputs import read_inputs
from batcher.ledger import Answer, Ledger, RunIdentity, State
from batcher.pacer import Pacer
from batcher.plan import Plan, make_plan
from batcher.report import Summary, say, write_rejects
from batcher.retries import RETRYABLE, retry_policy
from batcher.simulator import GraphSimulator, RunningSimulator

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
    started: float = field(default_factory=time.monotonic)

    @property
    def settled(self) -> int:
        return self.confirmed + self.failed + self.unknown


@dataclass(frozen=True)
class RunOutcome:
    confirmed: int
    failed: int
    unknown: int
    requests: int
    throttled: int
    seconds: float
    stopped_by: AuthError | None


class AuthBreaker:
    """Trips on a 403, or on a 401 right after the token was refreshed."""

    def __init__(self) -> None:
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
            if self._unauthorized_in_a_row >= 2:
                self.tripped = AuthError(
                    f"Graph refused the token twice, even after a refresh (401 "
                    f"{exc.code or 'Unauthorized'}, request-id {exc.request_id or 'none'}); "
                    "sign in again or get a fresh token for this tenant's Graph, "
                    "then run the same command"
                )


class Runner:
    """Runs batches through ``max_in_flight`` workers sharing one pacer and one ledger."""

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
        self._breaker = AuthBreaker()
        self.tally = Tally()

    async def run(self, batches: Iterable[list[str]]) -> RunOutcome:
        send, receive = anyio.create_memory_object_stream[list[str]](0)
        async with anyio.create_task_group() as tg:
            self._cancel = tg.cancel_scope
            for _ in range(self._max_in_flight):
                tg.start_soon(self._worker, receive.clone())
            receive.close()
            async with send:
                for batch in batches:
                    await send.send(batch)
        t = self.tally
        return RunOutcome(
            confirmed=t.confirmed,
            failed=t.failed,
            unknown=t.unknown,
            requests=t.requests,
            throttled=t.throttled,
            seconds=time.monotonic() - t.started,
            stopped_by=self._breaker.tripped,
        )

    async def _worker(self, batches: anyio.abc.ObjectReceiveStream[list[str]]) -> None:
        async with batches:
            async for user_ids in batches:
                await self._send(user_ids)

    async def _send(self, user_ids: Sequence[str]) -> None:
        """Send one batch until it settles; on a 400 split it to isolate the bad IDs."""
        batch_id = self._ledger.start_batch(user_ids)
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
        except BadRequest as exc:
            if len(user_ids) == 1:
                self._settle(batch_id, State.FAILED, exc, len(user_ids))
                return
            middle = len(user_ids) // 2
            await self._send(user_ids[:middle])
            await self._send(user_ids[middle:])
        except GraphError as exc:
            if self._breaker.tripped is not None:
                return  # left "sending": a resume sends it again once sign-in is fixed
            # Out of retry time on a transient answer, the IDs may or may not have been
            # applied (unknown: a resume re-sends them); any other answer is permanent.
            state = State.UNKNOWN if isinstance(exc, RETRYABLE) else State.FAILED
            self._settle(batch_id, state, exc, len(user_ids))
        else:
            self.tally.confirmed += len(user_ids)
            self._notify()

    async def _attempt(self, batch_id: int, user_ids: Sequence[str]) -> None:
        client_request_id = str(uuid.uuid4())
        attempt_id = self._ledger.start_attempt(batch_id, client_request_id)
        await self._pacer.acquire()
        self.tally.requests += 1
        try:
            accepted = await self._client.post_action(self._action, user_ids, client_request_id)
        except GraphError as exc:
            self._ledger.finish_attempt(attempt_id, batch_id, _answer(exc))
            self._feedback(exc)
            raise
        self._ledger.finish_attempt(
            attempt_id,
            batch_id,
            Answer("accepted", http_status=accepted.status, request_id=accepted.request_id),
            settle=State.CONFIRMED,
        )
        self._feedback(None)

    def _feedback(self, exc: GraphError | None) -> None:
        if isinstance(exc, Throttled):
            self.tally.throttled += 1
            self._pacer.throttled()
        elif exc is not None and exc.retry_after is not None:
            self._pacer.hold(exc.retry_after)
        elif exc is None:
            self._pacer.succeeded()
        self._breaker.record(exc)
        if self._breaker.tripped is not None:
            self._cancel.cancel()

    def _settle(self, batch_id: int, state: State, exc: GraphError, size: int) -> None:
        self._ledger.settle_batch(batch_id, state, _answer(exc))
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


# -- the whole job: inputs -> plan -> ledger -> send -> summary --------------------------------


@dataclass(frozen=True)
class JobOptions:
    inputs: tuple[Path, ...]
    column: str | None = None
    ledger: Path | None = None
    dry_run: bool = False
    action: str = ACTION_CONFIRM


def run_job(settings: Settings, options: JobOptions, console: Console) -> Summary:
    """Read, plan, record and send; a failed batch is data in the summary, not an error."""
    inputs = read_inputs(options.inputs, options.column)
    for item in inputs.files:
        say(
            console,
            f"{item.path}: {item.rows:,} rows; ID column {item.column!r} ({item.column_reason})",
        )
    for warning in inputs.warnings:
        say(console, warning, prefix="warning: ", style="yellow")
    simulated = settings.graph.target == "simulator"
    tokens = token_source(settings.auth, simulator=simulated)
    identity = RunIdentity(
        action=options.action,
        tenant=_tenant(settings, tokens, simulated),
        cloud=settings.graph.cloud,
        api_version=settings.graph.api_version,
    )
    ledger_path = options.ledger or default_ledger_path(settings, options, identity)
    rejects_path = ledger_path.with_name(ledger_path.stem + ".rejects.csv")
    if inputs.invalid:
        write_rejects(inputs.rejects, rejects_path)

    def summary(plan: Plan, outcome: RunOutcome | None = None) -> Summary:
        return Summary(
            action=options.action,
            target=settings.graph.target,
            tenant=identity.tenant,
            cloud=identity.cloud,
            api_version=identity.api_version,
            dry_run=options.dry_run,
            rows=inputs.rows,
            valid=inputs.valid,
            duplicates=inputs.duplicates,
            invalid=inputs.invalid,
            already_done=plan.already_done,
            failed_before=plan.failed_before,
            to_send=plan.to_send.len(),
            batches=plan.batches,
            estimated_seconds=plan.seconds_at(settings.send.rate_per_second),
            confirmed=outcome.confirmed if outcome else 0,
            failed=outcome.failed if outcome else 0,
            unknown=outcome.unknown if outcome else 0,
            requests=outcome.requests if outcome else 0,
            throttled=outcome.throttled if outcome else 0,
            seconds=outcome.seconds if outcome else 0.0,
            ledger=str(ledger_path) if ledger_path.exists() else None,
            rejects=str(rejects_path) if inputs.invalid else None,
            stopped=str(outcome.stopped_by) if outcome and outcome.stopped_by else None,
        )

    if options.dry_run:
        plan = make_plan(inputs, _known_states(ledger_path, identity), settings.send.batch_size)
        return summary(plan)
    ledger = Ledger.open(ledger_path, identity)
    try:
        plan = make_plan(inputs, ledger.known_states(), settings.send.batch_size)
        ledger.add_ids(plan.new_ids)
        say(console, f"ledger: {ledger_path}")
        if plan.to_send.len() == 0:
            return summary(plan)
        outcome = anyio.run(
            _send_plan, settings, ledger, plan, tokens, options.action, console, simulated
        )
    finally:
        ledger.close()
    return summary(plan, outcome)


async def _send_plan(
    settings: Settings,
    ledger: Ledger,
    plan: Plan,
    tokens: TokenSource,
    action: str,
    console: Console,
    simulated: bool,
) -> RunOutcome:
    with contextlib.ExitStack() as stack:
        if simulated:
            sim = stack.enter_context(RunningSimulator(GraphSimulator(settings.simulator)))
            base_url = sim.url
            say(
                console,
                f"sending to the built-in Graph simulator at {base_url}; no real tenant is touched",
                prefix="SIMULATOR: ",
                style="bold magenta",
            )
        else:
            base_url = settings.graph.base_url or CLOUDS[settings.graph.cloud].graph_url
        timeout = httpx.Timeout(settings.send.timeout_seconds, connect=10.0)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
            client = GraphClient(http, base_url, settings.graph.api_version, tokens)
            pacer = Pacer(settings.send.rate_per_second)
            progress = _PlainProgress(console, plan.to_send.len())
            runner = Runner(
                ledger,
                client,
                pacer,
                action=action,
                max_in_flight=settings.send.max_in_flight,
                retry_for_seconds=settings.send.retry_for_seconds,
                backoff=(settings.send.backoff_initial_seconds, settings.send.backoff_max_seconds),
                on_settled=progress,
            )
            return await runner.run(plan.iter_batches())
    raise AssertionError("unreachable")  # pragma: no cover


class _PlainProgress:
    """A progress line every few seconds (and at the end)."""

    def __init__(self, console: Console, total: int, every: float = 5.0) -> None:
        self._console = console
        self._total = total
        self._every = every
        self._last = time.monotonic()

    def __call__(self, tally: Tally) -> None:
        now = time.monotonic()
        if tally.settled < self._total and now - self._last < self._every:
            return
        self._last = now
        say(
            self._console,
            f"progress: {tally.settled:,}/{self._total:,} IDs settled: "
            f"{tally.confirmed:,} confirmed, {tally.failed:,} failed, {tally.unknown:,} unsure; "
            f"{tally.requests:,} requests, {tally.throttled:,} throttled",
        )


def _tenant(settings: Settings, tokens: TokenSource, simulated: bool) -> str:
    if simulated:
        return "simulator"
    if settings.auth.tenant_id:
        return settings.auth.tenant_id
    if isinstance(tokens, StaticToken):
        return tenant_of(tokens.value) or "token-tenant"
    return "default"


def default_ledger_path(settings: Settings, options: JobOptions, identity: RunIdentity) -> Path:
    """One ledger per (inputs, action, tenant): re-running the same command finds it again."""
    key = "\n".join(
        [*sorted(str(p.resolve()) for p in options.inputs), identity.action, identity.tenant]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    stem = options.inputs[0].name.split(".")[0][:40] if options.inputs else "ids"
    tenant = identity.tenant if len(identity.tenant) <= 12 else identity.tenant[:8]
    return settings.ledger.dir / f"{stem}-{identity.action}-{tenant}-{digest}.sqlite"


def _known_states(path: Path, identity: RunIdentity) -> pl.DataFrame:
    """The ledger's states for a dry run, without creating or changing anything."""
    if not path.exists():
        return pl.DataFrame(schema={"user_id": pl.String, "state": pl.String})
    ledger = Ledger.open_existing(path, identity)
    try:
        return ledger.known_states()
    finally:
        ledger.close()
