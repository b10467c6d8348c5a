"""Graph for one command, opened on first use: simulator, HTTP client, sign-in, budgets' pacers."""

from __future__ import annotations

import contextlib
from types import TracebackType

from batcher.actions import Budget
from batcher.auth import ssl_context
from batcher.calls import Caller, Control, RetrySettings
from batcher.clouds import CLOUDS
from batcher.config import Settings
from batcher.eventlog import Event
from batcher.graph import GraphClient, http_client
from batcher.job.setup import Job, check_tenant
from batcher.pacer import Pacer


def budget_pacers(settings: Settings) -> dict[Budget, Pacer]:
    """One pacer per budget, at the configured rates."""
    return {
        Budget.IDENTITY_PROTECTION: Pacer(settings.send.rate_per_second),
        Budget.DIRECTORY_READS: Pacer(settings.directory.reads_per_second),
        Budget.DIRECTORY_WRITES: Pacer(settings.directory.writes_per_second),
    }


def paced_rates(pacers: dict[Budget, Pacer]) -> dict[Budget, float]:
    """The rate each budget is really spent at (the pacers keep a small margin)."""
    return {budget: 1.0 / pacer.base_interval for budget, pacer in pacers.items()}


class Session:
    """Used as ``async with Session(job) as session``; ``await session.client()`` starts the
    built-in simulator when asked to, opens the HTTP client and signs in (checking the tenant)
    the first time only. One pacer per budget serves every phase of the command."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.pacers = budget_pacers(job.settings)
        self.rates = paced_rates(self.pacers)
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
        try:
            await self._stack.aclose()
        finally:
            if self.job.tokens is not None:
                self.job.tokens.close()

    async def client(self) -> GraphClient:
        if self._client is not None:
            return self._client
        job, settings = self.job, self.job.settings
        if job.tokens is None:
            raise RuntimeError("this command was set up offline; it cannot call Graph")
        transport = None
        if job.transport is not None:
            base_url, transport = job.transport
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
            )
        )
        client = GraphClient(http, base_url, settings.graph.api_version)
        check_tenant(await job.tokens.token(), job.scope.tenant)  # sign in first
        self._client = client
        return client

    def caller(self, control: Control) -> Caller:
        send = self.job.settings.send
        retry = RetrySettings(
            send.retry_for_seconds, (send.backoff_initial_seconds, send.backoff_max_seconds)
        )
        return Caller(self.pacers, retry, control)

    def control(self) -> Control:
        send = self.job.settings.send
        control = Control(send.timeout_seconds + 5, self.job.observer)
        control.unreachable_after = send.unreachable_after_seconds
        return control
