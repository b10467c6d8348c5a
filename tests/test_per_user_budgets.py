"""The directory lane paces each batch on its actions' own budget, and names each action's own
permission: nothing assumes every per-user action writes to the directory."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from time import monotonic
from typing import Any

import httpx
import pytest

from batcher.actions import ACTIONS, Budget
from batcher.auth import StaticToken
from batcher.errors import AuthError
from batcher.graph import GraphClient, http_client
from batcher.simulator import GraphSimulator
from batcher.workers.send import LaneContext, SendOutcome, Work, send
from tests.helpers import (
    GRAPH,
    TEST_TOKEN,
    Events,
    graph_client,
    ids,
    paced_caller,
    sim_settings,
    step_ledger,
)
from tests.virtual_time import VirtualTime

pytestmark = pytest.mark.anyio
DISABLE, REVOKE = ACTIONS["disable"], ACTIONS["revoke-sessions"]
# revoke-sessions as if it were on another budget (a future row: remove-auth-methods on its own)
REVOKE_ON_READS = replace(REVOKE, budget=Budget.DIRECTORY_READS)


async def _send(
    tmp_path: Path,
    works: list[Work],
    client: GraphClient,
    time: VirtualTime | None = None,
    **rates: float,
) -> tuple[SendOutcome, list[tuple[float, dict[str, Any]]]]:
    """Send ``works`` through one worker; returns the outcome and every request event, timed
    (on the pacers' clock: ``time``'s, if given)."""
    events = Events()
    timed: list[tuple[float, dict[str, Any]]] = []
    clock = monotonic if time is None else time.clock

    def observer(event: str, **fields: Any) -> None:
        events(event, **fields)
        if event == "request":
            timed.append((clock(), fields))

    caller = paced_caller(observer=observer, time=time, **rates)
    ledger = step_ledger(tmp_path / "ledger.sqlite", {w.action.name: w.user_ids for w in works})
    try:
        outcome = await send(
            LaneContext(ledger, client, caller, 1, control=caller.control), works, 60
        )
    finally:
        ledger.close()
    return outcome, timed


def _simulator(time: VirtualTime | None = None) -> GraphSimulator:
    fast = sim_settings(directory_writes_per_second=5000.0, directory_writes_burst=200)
    budget_clock = {} if time is None else {"budget_clock": time.clock}
    return GraphSimulator(fast, tokens={TEST_TOKEN}, **budget_clock)


async def test_a_batch_holds_one_budget_and_is_paced_on_it(tmp_path: Path) -> None:
    """Timed on one virtual clock (the pacers' and Graph's budgets'): a loaded host that is
    slow to record one answer cannot bring the next request's time closer to it."""
    disabled, revoked = ids(30), ids(40, seed=2)  # other users: both ready at once
    works = [Work(DISABLE, disabled), Work(REVOKE_ON_READS, revoked)]
    reads = 100.0
    time = VirtualTime()
    async with time.running(), graph_client(_simulator(time), time=time) as client:
        outcome, timed = await _send(tmp_path, works, client, time, reads=reads, writes=5000.0)

    assert outcome.counts == {"disable": {"done": 30}, "revoke-sessions": {"done": 40}}
    sent = [(f["action"], f["budget"], f["ids"]) for _, f in timed]
    # never one batch of 10 disables and 10 revokes: each batch is on one budget
    assert sorted(sent) == [
        ("disable", "directory_writes", 10),
        ("disable", "directory_writes", 20),
        ("revoke-sessions", "directory_reads", 20),
        ("revoke-sessions", "directory_reads", 20),
    ]
    on_reads = [t for t, f in timed if f["budget"] == Budget.DIRECTORY_READS.value]
    gaps = [b - a for a, b in itertools.pairwise(on_reads)]
    assert gaps and min(gaps) >= 0.9 * 20 / reads  # 20 of the reads budget, at its own rate


async def test_actions_on_one_budget_still_share_a_batch(tmp_path: Path) -> None:
    disabled, revoked = ids(10), ids(10, seed=2)
    works = [Work(DISABLE, disabled), Work(REVOKE, revoked)]
    async with graph_client(_simulator()) as client:
        outcome, timed = await _send(tmp_path, works, client)
    assert outcome.counts == {"disable": {"done": 10}, "revoke-sessions": {"done": 10}}
    assert [(f["action"], f["budget"], f["ids"]) for _, f in timed] == [
        ("disable+revoke-sessions", "directory_writes", 20)
    ]


async def test_a_step_after_another_on_another_budget_still_waits_for_it(
    tmp_path: Path,
) -> None:
    users = ids(25)
    works = [Work(DISABLE, users), Work(REVOKE_ON_READS, users)]
    sim = _simulator()
    async with graph_client(sim) as client:
        outcome, _ = await _send(tmp_path, works, client)
    assert outcome.counts == {"disable": {"done": 25}, "revoke-sessions": {"done": 25}}
    for uid in users:
        ops = sim.record.operations(uid)
        assert ops == ["disable", "revoke"]


async def test_graph_refusing_a_batch_of_two_actions_names_each_ones_permission(
    tmp_path: Path,
) -> None:
    """A 403 for the whole JSON batch: every action in it was refused, so the breaker names
    disable's permission and revoke-sessions' own, not only the first step's."""
    seen: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        error = {"code": "Authorization_RequestDenied", "message": "Insufficient privileges."}
        return httpx.Response(403, json={"error": error})

    works = [Work(DISABLE, ids(3)), Work(REVOKE, ids(3, seed=2))]
    transport = httpx.MockTransport(refuse)
    async with http_client(StaticToken(TEST_TOKEN), timeout=5.0, transport=transport) as http:
        outcome, timed = await _send(tmp_path, works, GraphClient(http, GRAPH, "v1.0"))

    assert len(seen) == 1 and [f["action"] for _, f in timed] == ["disable+revoke-sessions"]
    stopped = outcome.stopped_by
    assert isinstance(stopped, AuthError) and "403" in str(stopped)
    said = str(stopped)
    assert f"{DISABLE.permission} for disable" in said
    assert f"{REVOKE.permission} for revoke-sessions" in said
