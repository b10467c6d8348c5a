"""Graph for one command, opened on first use: simulator, HTTP client, sign-in, budgets' pacers."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

import anyio
import httpx

from batcher.actions import KEYED_BUDGETS, READ_UNITS, TENANT_READ, Budget
from batcher.auth import ssl_context, tenant_of
from batcher.calls import Call, Caller, RetrySettings, refused
from batcher.clouds import CLOUDS
from batcher.config import Settings
from batcher.control import Control
from batcher.errors import AuthError, GraphError
from batcher.eventlog import Event
from batcher.graph import GraphClient, http_client
from batcher.job.ledgers import default_path
from batcher.job.setup import Job, check_tenant
from batcher.pacer import BudgetSpec, KeyedPacers, Limit, Pacer


def budget_specs(settings: Settings) -> dict[Budget, BudgetSpec]:
    """Each budget as Graph documents it (the settings' figures): its limits, and requests in
    flight at most."""
    send, directory, budgets = settings.send, settings.directory, settings.budgets
    return {
        Budget.IDENTITY_PROTECTION: BudgetSpec(
            (Limit.steady(send.rate_per_second),), send.max_in_flight
        ),
        Budget.DIRECTORY_READS: BudgetSpec(  # reads a window, of resource units
            (Limit(directory.read_units_per_window / READ_UNITS, directory.read_window_seconds),),
            send.max_in_flight,
        ),
        Budget.DIRECTORY_WRITES: BudgetSpec(
            (
                Limit(directory.writes_per_window, directory.writes_window_seconds),
                Limit(directory.tenant_writes_per_window, directory.tenant_writes_window_seconds),
            ),
            directory.writes_at_once,
        ),
        Budget.REPORTS: BudgetSpec(
            (Limit(budgets.reports_per_window, budgets.reports_window_seconds),),
            budgets.reports_at_once,
        ),
        Budget.SECURITY: BudgetSpec(
            (Limit(budgets.security_per_window, budgets.security_window_seconds),), 1
        ),
        Budget.OUTLOOK: BudgetSpec(  # per mailbox: KEYED_BUDGETS
            (Limit(budgets.outlook_per_window, budgets.outlook_window_seconds),),
            budgets.outlook_at_once,
        ),
    }


def in_flight_at_most(settings: Settings) -> int:
    """Requests a run keeps in flight at most: each budget's cap, and one per open mailbox on
    a per-mailbox budget (a user's items there are acted on one at a time); the HTTP pool
    keeps that many connections."""
    specs = budget_specs(settings)
    keyed = len(KEYED_BUDGETS) * settings.budgets.outlook_open_mailboxes
    return keyed + sum(spec.at_once for b, spec in specs.items() if b not in KEYED_BUDGETS)


def budget_pacers(settings: Settings) -> dict[Budget, Pacer | KeyedPacers]:
    """One pacer per budget, within its documented limits; a budget of Graph's per mailbox
    (Outlook) gets one per mailbox, created on demand."""
    return {
        budget: (
            KeyedPacers(spec, settings.budgets.outlook_open_mailboxes)
            if budget in KEYED_BUDGETS
            else Pacer(spec)
        )
        for budget, spec in budget_specs(settings).items()
    }


@dataclass(frozen=True)
class Route:
    """Graph through this httpx transport at this base URL instead of the network (tests; a
    simulator in process)."""

    base_url: str
    transport: httpx.AsyncBaseTransport


class Session:
    """Used as ``async with Session(job, route) as session``; ``await session.client()`` starts
    the built-in simulator when asked to, opens the HTTP client and signs in (checking the
    tenant) the first time only. One pacer per budget serves every phase of the command. It
    closes what it opened; the job's token source is closed by whoever created it."""

    def __init__(self, job: Job, route: Route | None = None) -> None:
        self.job = job
        self.route = route
        self.pacers = budget_pacers(job.settings)
        self.specs = budget_specs(job.settings)
        self._stack = contextlib.AsyncExitStack()
        self._client: GraphClient | None = None

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def client(self) -> GraphClient:
        if self._client is not None:
            return self._client
        job, settings = self.job, self.job.settings
        if job.tokens is None:
            raise RuntimeError("this command was set up offline; it cannot call Graph")
        transport = None
        if self.route is not None:
            base_url, transport = self.route.base_url, self.route.transport
        elif job.simulated:
            if job.start_simulator is None:
                raise RuntimeError("this job names the simulator but was given none to start")
            base_url = self._stack.enter_context(job.start_simulator(settings.simulator))
            job.observer(Event.SIMULATOR, url=base_url)
        else:
            base_url = settings.graph.base_url or CLOUDS[settings.graph.cloud].graph_url
        http = await self._stack.enter_async_context(
            http_client(
                job.tokens,
                timeout=settings.send.timeout_seconds,
                verify=ssl_context(settings.auth.ca_bundle) or True,
                transport=transport,
                connections=in_flight_at_most(settings),
            )
        )
        client = GraphClient(http, base_url, settings.graph.api_version)
        check_tenant(await job.tokens.token(), job.scope.tenant)  # sign in first
        self._client = client
        return client

    async def tenant(self) -> str:
        """The tenant the job's token signs in to: the token's tid claim, else Graph's answer
        to GET /organization?$select=id (one directory read, paced and retried as any)."""
        client = await self.client()  # signs in
        assert self.job.tokens is not None
        found = tenant_of(await self.job.tokens.token())
        if found:
            return found
        control = self.control()
        call = Call(TENANT_READ.budget, client.organization_id, TENANT_READ.permission)
        try:
            with control.scope():  # no connection for too long trips the breaker
                found = await self.caller(control)(call)
        except GraphError as exc:
            what = "the read of the tenant signed in to (GET /organization)"
            raise AuthError(refused(what, exc, TENANT_READ.permission)) from None
        if control.breaker.tripped is not None:
            raise control.breaker.tripped
        if not found:
            raise AuthError(
                "Graph did not say which tenant the token signs in to (GET /organization "
                "named none); set [auth] tenant_id to the Directory (tenant) ID"
            )
        return found

    def caller(self, control: Control) -> Caller:
        send = self.job.settings.send
        retry = RetrySettings(
            send.retry_for_seconds, (send.backoff_initial_seconds, send.backoff_max_seconds)
        )
        return Caller(self.pacers, retry, control)

    def control(self) -> Control:
        send = self.job.settings.send
        return Control(send.timeout_seconds + 5, self.job.observer, send.unreachable_after_seconds)


def signed_in(
    job: Job,
    inputs: Sequence[Path] = (),
    route: Route | None = None,
    sources: Sequence[str] = (),
) -> Job:
    """``job`` with its tenant named, and its ledger (when none was given) named by it. When
    neither the settings nor the token name the tenant, this signs in and asks Graph (one
    directory read) before any ledger is chosen: a ledger is never named by a guess."""
    if job.scope.tenant or job.tokens is None:
        return job

    async def ask() -> str:
        async with Session(job, route) as session:
            return await session.tenant()

    scope = replace(job.scope, tenant=anyio.run(ask))
    named = inputs or sources
    ledger = job.ledger or (default_path(job.settings, inputs, scope, sources) if named else None)
    return replace(job, scope=scope, ledger=ledger)
