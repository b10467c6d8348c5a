"""Graph's write window against the simulator: a burst up to the window goes at once, the window
then refills at its rate, a Retry-After holds every worker, and the per-user order holds with
every batch in flight.

The writes pacer and the simulator's write budget share one fake clock that moves only when
the pacer sleeps (each sleep is recorded), so nothing here waits for real.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from batcher.actions import ACTIONS, Budget
from batcher.auth import StaticToken
from batcher.calls import Caller, RetrySettings
from batcher.control import Control
from batcher.graph import GraphClient, http_client
from batcher.pacer import BudgetSpec, Limit, Pacer
from batcher.simulator import DirectoryUser, GraphSimulator
from batcher.workers.send import LaneContext, SendOutcome, Work, send
from tests.helpers import GRAPH, TEST_TOKEN, ids, sim_settings, step_ledger

pytestmark = pytest.mark.anyio
START = 1000.0
LATENCY = {"latency_min_seconds": 0.01, "latency_max_seconds": 0.02}  # real: answers overlap


class FakeTime:
    """A clock that only moves when the pacer sleeps, and never while a request is on the wire
    (Graph sees each request at the time the pacer let it go); every sleep is recorded."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []
        self.busy = 0
        self._quiet: anyio.Event | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        until = self.now + seconds
        while self.busy:
            self._quiet = self._quiet or anyio.Event()
            await self._quiet.wait()
        self.now = max(self.now, until)
        await anyio.lowlevel.checkpoint()

    def sending(self) -> None:
        self.busy += 1

    def answered(self) -> None:
        self.busy -= 1
        if not self.busy and self._quiet is not None:
            self._quiet.set()
            self._quiet = None


@dataclass
class Wire(httpx.AsyncBaseTransport):
    """The simulator's in-process transport, noting for each JSON batch when (on the fake
    clock) it reached Graph and whether an inner answer said 429, and how many were in flight."""

    inner: httpx.AsyncBaseTransport
    time: FakeTime
    sent: list[float] = field(default_factory=list)
    throttled_at: list[float] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(self.time.now)
        self.time.sending()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            response = await self.inner.handle_async_request(request)
            body = await response.aread()
        finally:
            self.in_flight -= 1
            self.time.answered()
        inner = json.loads(body).get("responses", []) if body else []
        if any(r.get("status") == 429 for r in inner):
            self.throttled_at.append(self.time.now)
        return httpx.Response(response.status_code, headers=response.headers, content=body)


@dataclass
class Contained:
    outcome: SendOutcome
    sim: GraphSimulator
    wire: Wire
    time: FakeTime


async def _contain(
    tmp_path: Path,
    users: int,
    actions: tuple[str, ...] = ("disable",),
    *,
    window: Limit,
    graph_burst: int,
    graph_rate: float,
    at_once: int = 16,
    **simulator: Any,
) -> Contained:
    """Send ``actions`` for ``users`` members through the real lanes: the writes pacer has
    ``window``; the simulator's write budget is a bucket of ``graph_burst`` at ``graph_rate``."""
    time = FakeTime()
    writes = Pacer(BudgetSpec((window,), at_once), clock=time.clock, sleep=time.sleep)
    pacers = {
        Budget.IDENTITY_PROTECTION: Pacer(1000.0),
        Budget.DIRECTORY_READS: Pacer(1000.0),
        Budget.DIRECTORY_WRITES: writes,
    }
    caller = Caller(pacers, RetrySettings(60.0, (0.01, 0.05)), Control(5.0))
    people = [
        DirectoryUser(id=uid, userPrincipalName=f"user{n}@contoso.com")
        for n, uid in enumerate(ids(users, seed=3))
    ]
    settings = sim_settings(
        directory_writes_per_second=graph_rate, directory_writes_burst=graph_burst, **simulator
    )
    sim = GraphSimulator(settings, tokens={TEST_TOKEN}, users=people, budget_clock=time.clock)
    wire = Wire(sim.transport(), time)
    steps = {a: [u.id for u in people] for a in actions}
    ledger = step_ledger(tmp_path / "ledger.sqlite", steps)
    try:
        async with _client(wire) as client:
            works = [Work(ACTIONS[a], steps[a]) for a in actions]
            outcome = await send(
                LaneContext(ledger, client, caller, 4, control=caller.control), works, 60
            )
    finally:
        ledger.close()
    return Contained(outcome, sim, wire, time)


@contextlib.asynccontextmanager
async def _client(transport: httpx.AsyncBaseTransport) -> AsyncIterator[GraphClient]:
    async with http_client(StaticToken(TEST_TOKEN), timeout=5.0, transport=transport) as http:
        yield GraphClient(http, GRAPH, "v1.0")


async def test_a_burst_up_to_the_window_goes_at_once_with_no_429(tmp_path: Path) -> None:
    done = await _contain(tmp_path, 180, window=Limit(200, 10.0), graph_burst=200, graph_rate=20.0)
    assert done.outcome.counts == {"disable": {"done": 180}}
    assert done.time.sleeps == []  # nine JSON batches, none waited for its turn
    assert done.time.now == START
    assert done.wire.most_in_flight == 9  # all of them in flight together
    assert done.sim.record.inner_statuses[429] == 0


async def test_past_the_window_writes_go_at_its_rate_with_no_429(tmp_path: Path) -> None:
    done = await _contain(tmp_path, 400, window=Limit(200, 10.0), graph_burst=200, graph_rate=20.0)
    assert done.outcome.counts == {"disable": {"done": 400}}
    assert done.sim.record.inner_statuses[429] == 0
    # 200 go at once (less the 1% reserve: 198), the other 202 at 20 a second
    elapsed = done.time.now - START
    assert (400 - 200) / 20 <= elapsed <= (400 - 198) / 20 + 1e-6
    first_waited = min(t for t in done.wire.sent if t > START)
    assert first_waited - START == pytest.approx(0.1, abs=1e-6)  # 18 of 198 left, 20 wanted


async def test_a_retry_after_holds_every_worker_on_the_budget(tmp_path: Path) -> None:
    # Graph's window is smaller than the pacer thinks (another app spent it): 100, then one
    # write every 5 s, so its 429s say Retry-After: 5.
    done = await _contain(tmp_path, 120, window=Limit(3000, 150.0), graph_burst=100, graph_rate=0.2)
    assert done.outcome.counts == {"disable": {"done": 120}}
    throttled = done.wire.throttled_at[0]
    assert throttled == START  # the sixth of six batches in flight at once
    after = [t for t in done.wire.sent if t > throttled]
    assert after and min(after) >= throttled + 5.0  # nobody went before the Retry-After
    assert all(t == START or t >= START + 5.0 for t in done.wire.sent)


async def test_disable_precedes_revoke_for_every_user_with_every_batch_in_flight(
    tmp_path: Path,
) -> None:
    done = await _contain(
        tmp_path,
        600,
        ("disable", "revoke-sessions"),
        window=Limit(3000, 150.0),
        graph_burst=3000,
        graph_rate=20.0,
        latency_min_seconds=0.0,
        latency_max_seconds=0.02,
        seed=5,
    )
    assert done.outcome.counts == {"disable": {"done": 600}, "revoke-sessions": {"done": 600}}
    assert done.wire.most_in_flight == 16  # the budget's cap, reached
    assert done.time.sleeps == []  # 1,200 writes: within the window, bound by latency only
    for uid in ids(600, seed=3):
        assert done.sim.record.operations(uid) == ["disable", "revoke"], uid
