"""The directory lane (one request per user inside JSON batches of 20) through ``send``, against
the simulator in-process: each user's order, each inner answer judged alone, the breaker,
pacing by inner requests, and both lanes at once."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from time import monotonic
from typing import Any

import pytest

from batcher.actions import ACTIONS, ORDER, Budget
from batcher.calls import Caller, StopSignal
from batcher.errors import AuthError
from batcher.eventlog import Observer
from batcher.ledger import TO_SEND, Ledger, RunRecord, StepState
from batcher.simulator import DirectoryUser, GraphSimulator
from batcher.workers.send import FORBIDDEN_IN_A_ROW, LaneContext, SendOutcome, Work, send
from tests.helpers import (
    TEST_TOKEN,
    counts,
    graph_client,
    ids,
    paced_caller,
    sim_settings,
    step_ledger,
)
from tests.virtual_time import VirtualTime

pytestmark = pytest.mark.anyio
CALLER_KEYS = {"ip", "writes", "retry_for", "backoff", "sleep", "grace", "observer"}
PRIVILEGED_ROLE = "privileged role"
NO_SUCH_USER = "no such user"
DISABLE_PERMISSION = "User.EnableDisableAccount.All"
# A retry's back-off no test waits out (with its jitter, 30-60 s): a run that ends well within
# it did not wait for it, however slowly a loaded host ran the rest (the per-user lane waits
# for a back-off on the host's clock).
LONG_BACKOFF = 60.0


@dataclass
class Sent:
    outcome: SendOutcome
    sim: GraphSimulator
    ledger: Path
    caller: Caller
    seconds: float

    def states(self, action: str) -> dict[str, str]:
        with sqlite3.connect(self.ledger) as db:
            rows = db.execute("SELECT user_id, state FROM steps WHERE action = ?", (action,))
            return dict(rows.fetchall())

    def step(self, uid: str, action: str) -> tuple[str, int | None, str | None]:
        """(state, last status, error message) of one step."""
        with sqlite3.connect(self.ledger) as db:
            row = db.execute(
                "SELECT state, last_status, error_message FROM steps "
                "WHERE user_id = ? AND action = ?",
                (uid, action),
            ).fetchone()
        return row[0], row[1], row[2]

    def query(self, sql: str) -> list[Any]:
        with sqlite3.connect(self.ledger) as db:
            return db.execute(sql).fetchall()

    def tried(self, uid: str) -> list[tuple[str, int]]:
        """Every write the simulator received for one user, with its status, in order."""
        return [(w.op, w.status) for w in self.sim.record.writes if w.user_id == uid]


async def _send(
    tmp_path: Path,
    steps: dict[str, list[str]],
    *,
    users: list[DirectoryUser] | None = None,
    max_in_flight: int = 4,
    stop: StopSignal | None = None,
    resume: Path | None = None,
    time: VirtualTime | None = None,
    **options: Any,
) -> Sent:
    """Send ``steps`` (action -> user IDs): ``options`` are simulator settings, or the
    caller's (ip, writes, retry_for, backoff, sleep, grace, observer). ``resume``: a new run
    on that ledger, whose ``steps`` are already in it (a fresh simulator, same ``users``).
    ``time``: the pacers, back-offs and Graph's budgets on that virtual clock, and
    ``seconds`` measured on it; else ``seconds`` is the host's."""
    caller_options = {k: v for k, v in options.items() if k in CALLER_KEYS}
    caller = paced_caller(time=time, **caller_options)
    changes: dict[str, Any] = {
        "rate_per_second": 1000.0,
        "burst": 20,
        "directory_writes_per_second": 5000.0,
        "directory_writes_burst": 200,
    }
    changes.update({k: v for k, v in options.items() if k not in CALLER_KEYS})
    budget_clock = {} if time is None else {"budget_clock": time.clock}
    sim = GraphSimulator(sim_settings(**changes), tokens={TEST_TOKEN}, users=users, **budget_clock)
    if resume is None:
        path = tmp_path / "ledger.sqlite"
        ledger = step_ledger(path, steps)
    else:
        path, ledger = resume, Ledger.open(resume)
        ledger.begin_run(RunRecord("run", "digest"))
    works = [Work(ACTIONS[name], steps[name]) for name in ORDER if name in steps]
    clock = monotonic if time is None else time.clock
    started = clock()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if time is not None:
                await stack.enter_async_context(time.running())
            client = await stack.enter_async_context(graph_client(sim, time=time))
            outcome = await send(
                LaneContext(ledger, client, caller, max_in_flight, control=caller.control),
                works,
                60,
                stop,
            )
    finally:
        ledger.close()
    return Sent(outcome, sim, path, caller, clock() - started)


def _disabled_then_revoked(ops: list[str]) -> bool:
    """Every disable this user got came before their first revoke, and both came."""
    return (
        "disable" in ops
        and "revoke" in ops
        and max(i for i, op in enumerate(ops) if op == "disable") < ops.index("revoke")
    )


def _member(n: int, **fields: Any) -> DirectoryUser:
    return DirectoryUser(
        id=ids(n + 1, seed=7)[n], userPrincipalName=f"user{n}@contoso.com", **fields
    )


async def test_disable_comes_before_revoke_for_every_user(tmp_path: Path) -> None:
    users = ids(60)
    sent = await _send(tmp_path, {"disable": users, "revoke-sessions": users})
    assert sent.outcome.counts == {"disable": {"done": 60}, "revoke-sessions": {"done": 60}}
    for uid in users:
        assert sent.sim.record.operations(uid) == ["disable", "revoke"], uid
    assert counts(sent.ledger) == {"disable": {"done": 60}, "revoke-sessions": {"done": 60}}


async def test_disable_comes_before_revoke_under_inner_429s_5xx_and_a_small_write_budget(
    tmp_path: Path,
) -> None:
    """On one virtual clock (the pacers', Graph's budget and its record of writes): the run
    outpaces Graph's write budget, and each Retry-After holds, however slowly the host runs."""
    users = ids(30)
    sent = await _send(
        tmp_path,
        {"disable": users, "revoke-sessions": users},
        directory_faults={"500": 0.1, "503": 0.1},
        seed=5,
        directory_writes_per_second=100.0,
        directory_writes_burst=40,
        time=VirtualTime(),
    )
    record = sent.sim.record
    assert sent.outcome.counts == {"disable": {"done": 30}, "revoke-sessions": {"done": 30}}
    assert record.inner_statuses[429] > 0 and record.inner_statuses[500] > 0
    assert record.inner_statuses[503] > 0
    assert sent.outcome.throttled == record.inner_statuses[429]
    for uid in users:
        assert _disabled_then_revoked(record.operations(uid)), sent.tried(uid)
    # each 429 carried Retry-After (1 s): nothing was written between shortly after it and then
    times = sorted(w.at for w in record.writes)
    for held_at in (w.at for w in record.writes if w.status == 429):
        assert not [t for t in times if held_at + 0.2 < t < held_at + 0.9]
    assert sent.seconds >= 0.9


async def test_a_user_whose_disable_fails_for_good_still_gets_revoke_and_is_reported(
    tmp_path: Path,
) -> None:
    members = [_member(n) for n in range(10)]
    admins = [_member(n, privileged=True) for n in range(10, 12)]
    missing = ids(2, seed=99)
    users = [u.id for u in members + admins] + missing
    sent = await _send(
        tmp_path, {"disable": users, "revoke-sessions": users}, users=members + admins
    )
    assert sent.outcome.stopped_by is None
    assert sent.outcome.counts == {
        "disable": {"done": 10, "failed": 4},
        "revoke-sessions": {"done": 12, "failed": 2},
    }
    for user in members:
        assert sent.sim.record.operations(user.id) == ["disable", "revoke"]
    for user in admins:  # refused (an administrator), then revoked all the same
        assert sent.tried(user.id) == [("disable", 403), ("revoke", 200)]
        state, status, message = sent.step(user.id, "disable")
        assert (state, status) == ("failed", 403) and PRIVILEGED_ROLE in str(message)
        assert sent.step(user.id, "revoke-sessions")[:2] == ("done", 200)
    for uid in missing:  # no such user: both steps tried in order, both reported
        assert sent.tried(uid) == [("disable", 404), ("revoke", 404)]
        for action in ("disable", "revoke-sessions"):
            state, status, message = sent.step(uid, action)
            assert (state, status) == ("failed", 404) and NO_SUCH_USER in str(message)


async def test_an_inner_404_fails_only_that_user(tmp_path: Path) -> None:
    members = [_member(n) for n in range(27)]
    missing = ids(3, seed=99)
    users = [u.id for u in members[:10]] + missing + [u.id for u in members[10:]]
    sent = await _send(tmp_path, {"disable": users}, users=members)
    assert sent.outcome.counts == {"disable": {"done": 27, "failed": 3}}
    failed = {uid for uid, s in sent.states("disable").items() if s == "failed"}
    assert failed == set(missing)
    for uid in missing:
        assert NO_SUCH_USER in str(sent.step(uid, "disable")[2])
    assert all(not u.accountEnabled for u in members)


async def test_403_for_some_users_among_successes_fails_only_them(tmp_path: Path) -> None:
    directory = [_member(n, privileged=n % 6 == 0) for n in range(25)]
    admins = {u.id for u in directory if u.privileged}
    sent = await _send(tmp_path, {"disable": [u.id for u in directory]}, users=directory)
    assert sent.outcome.stopped_by is None
    assert sent.outcome.counts == {"disable": {"done": 25 - len(admins), "failed": len(admins)}}
    failed = {uid for uid, s in sent.states("disable").items() if s == "failed"}
    assert failed == admins
    for uid in admins:
        assert PRIVILEGED_ROLE in str(sent.step(uid, "disable")[2])
    assert {u.id for u in directory if u.accountEnabled} == admins


async def test_one_administrator_among_members_fails_alone_with_both_causes_named(
    tmp_path: Path,
) -> None:
    directory = [_member(0, privileged=True), *(_member(n) for n in range(1, 10))]
    admin = directory[0]
    sent = await _send(tmp_path, {"disable": [u.id for u in directory]}, users=directory)
    assert sent.outcome.stopped_by is None
    assert sent.outcome.counts == {"disable": {"done": 9, "failed": 1}}
    state, status, message = sent.step(admin.id, "disable")
    assert (state, status) == ("failed", 403)
    assert PRIVILEGED_ROLE in str(message) and DISABLE_PERMISSION in str(message)
    assert {u.id for u in directory if u.accountEnabled} == {admin.id}


@pytest.mark.parametrize("how_many", [1, 3, FORBIDDEN_IN_A_ROW - 1])
async def test_fewer_than_20_users_all_administrators_fail_without_tripping_the_breaker(
    tmp_path: Path, how_many: int
) -> None:
    """Graph refuses each one with the same 403 as a missing permission: too few in a row to
    tell, so each fails (both causes named) and their revokes still go."""
    admins = [_member(n, privileged=True) for n in range(how_many)]
    users = [u.id for u in admins]
    sent = await _send(
        tmp_path, {"disable": users, "revoke-sessions": users}, users=admins, max_in_flight=1
    )
    assert sent.outcome.stopped_by is None
    assert sent.outcome.counts == {
        "disable": {"failed": how_many},
        "revoke-sessions": {"done": how_many},
    }
    for uid in users:
        assert sent.tried(uid) == [("disable", 403), ("revoke", 200)]
        state, _, message = sent.step(uid, "disable")
        assert state == "failed"
        assert PRIVILEGED_ROLE in str(message) and DISABLE_PERMISSION in str(message)
    assert all(u.accountEnabled for u in admins)


@pytest.mark.parametrize(
    ("actions", "permission"),
    [
        (("disable",), DISABLE_PERMISSION),
        (("revoke-sessions",), "User.RevokeSessions.All"),
        (("disable", "revoke-sessions"), DISABLE_PERMISSION),
    ],
)
@pytest.mark.parametrize("how_many", [25, 50])
async def test_20_refusals_in_a_row_trip_the_breaker_naming_the_permission_and_replan(
    tmp_path: Path, actions: tuple[str, ...], permission: str, how_many: int
) -> None:
    users = ids(how_many)
    sent = await _send(
        tmp_path, dict.fromkeys(actions, users), max_in_flight=1, directory_write_denied=True
    )
    stopped = sent.outcome.stopped_by
    assert isinstance(stopped, AuthError) and permission in str(stopped)
    assert "403" in str(stopped)
    record = sent.sim.record
    # it stops after 20 refusals in a row: one batch
    assert record.batches == 1
    assert record.inner_requests == FORBIDDEN_IN_A_ROW
    assert {w.status for w in record.writes} == {403}
    if "revoke-sessions" in actions and "disable" in actions:
        assert not [w for w in record.writes if w.op == "revoke"]  # never before its disable
    for action in actions:  # not the users' fault: the same command sends them once granted
        assert set(sent.states(action).values()) == {"planned"}
        assert sent.outcome.of(action, StepState.FAILED) == 0  # nor counted as failed


async def test_a_lost_outer_answer_is_retried_and_the_steps_end_done(tmp_path: Path) -> None:
    users = ids(60)
    sent = await _send(
        tmp_path, {"disable": users, "revoke-sessions": users}, faults={"lost": 0.3}, seed=8
    )
    record = sent.sim.record
    assert record.faults["lost"] > 0
    assert sent.outcome.counts == {"disable": {"done": 60}, "revoke-sessions": {"done": 60}}
    assert record.batches > 6  # the lost ones were sent again
    assert any(record.operations(uid).count("disable") > 1 for uid in users)  # applied twice
    for uid in users:
        assert _disabled_then_revoked(record.operations(uid))
    lost = sent.query("SELECT COUNT(*) FROM attempts WHERE outcome = 'no_answer'")[0][0]
    assert lost == record.faults["lost"]


async def test_at_most_20_per_batch_and_pacing_spends_the_write_budget_by_inner_requests(
    tmp_path: Path,
) -> None:
    users = ids(100)
    rate = 500.0
    sent = await _send(tmp_path, {"disable": users}, writes=rate)
    record = sent.sim.record
    assert sent.outcome.counts == {"disable": {"done": 100}}
    assert (record.batches, record.inner_requests) == (5, 100)
    assert sent.query("SELECT COUNT(*), MAX(size), MIN(size) FROM batches") == [(5, 20, 20)]
    starts = sorted(
        datetime.fromisoformat(t).timestamp()
        for (t,) in sent.query("SELECT started_at FROM attempts")
    )
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.9 * 20 / rate  # each batch spent 20 of the budget, not 1
    assert sent.seconds >= 4 * 20 / rate


async def test_enable_works(tmp_path: Path) -> None:
    directory = [_member(n, accountEnabled=False) for n in range(30)]
    sent = await _send(tmp_path, {"enable": [u.id for u in directory]}, users=directory)
    assert sent.outcome.counts == {"enable": {"done": 30}}
    assert all(u.accountEnabled for u in directory)
    assert {w.op for w in sent.sim.record.writes} == {"enable"}


async def test_the_ip_lane_and_the_directory_lane_run_at_the_same_time(tmp_path: Path) -> None:
    """Each lane alone takes a measurable time at its pace; together, about the slower one.
    Measured on one virtual clock (pacers and Graph's budgets), so a loaded host is no factor."""
    confirm, contain = ids(300, seed=3), ids(100, seed=4)
    ip_rate, write_rate = 8.0, 350.0
    ip_alone = 4 * 1.02 / ip_rate  # 5 requests of 60: four intervals at least
    directory_alone = 9 * 20 * 1.02 / write_rate  # 10 batches of 20 inner requests
    sent = await _send(
        tmp_path,
        {"confirm": confirm, "disable": contain, "revoke-sessions": contain},
        ip=ip_rate,
        writes=write_rate,
        time=VirtualTime(),
    )
    assert sent.outcome.counts == {
        "confirm": {"done": 300},
        "disable": {"done": 100},
        "revoke-sessions": {"done": 100},
    }
    ip = [t for t, status in sent.sim.record.answers if status == 204]
    directory = [t for t, status in sent.sim.record.answers if status == 200]
    assert len(ip) == 5 and len(directory) == 10
    assert min(directory) < max(ip) and min(ip) < max(directory)  # interleaved
    assert max(ip_alone, directory_alone) <= sent.seconds < 0.9 * (ip_alone + directory_alone)


async def test_a_disable_left_unknown_holds_back_its_revoke_until_a_resume_sends_both_in_order(
    tmp_path: Path,
) -> None:
    """503s and no retry time: some disables end unknown (Graph may not have blocked the
    account), so their revokes stay planned, never sent; the others' revokes go. A resume
    with Graph healthy sends the disable again, then the revoke."""
    directory = [_member(n) for n in range(40)]
    users = [u.id for u in directory]
    steps = {"disable": users, "revoke-sessions": users}
    sent = await _send(
        tmp_path, steps, users=directory, directory_faults={"503": 0.5}, seed=4, retry_for=0
    )
    disable, revoke = sent.states("disable"), sent.states("revoke-sessions")
    unknown = {uid for uid, state in disable.items() if state == "unknown"}
    assert unknown and "done" in disable.values()  # both kinds happened
    assert {uid for uid, state in revoke.items() if state == "planned"} == unknown
    attempts = dict(
        sent.query("SELECT user_id, attempts FROM steps WHERE action = 'revoke-sessions'")
    )
    for uid in unknown:
        assert [op for op, _ in sent.tried(uid)] == ["disable"]  # no revoke reached Graph
        assert attempts[uid] == 0
    for uid in set(users) - unknown:  # done: its revoke was sent after it
        assert [op for op, _ in sent.tried(uid)] == ["disable", "revoke"]
    assert sum(sent.outcome.counts["revoke-sessions"].values()) == 40 - len(unknown)

    again = {a: [u for u, s in sent.states(a).items() if s in TO_SEND] for a in steps}
    resumed = await _send(tmp_path, again, users=directory, resume=sent.ledger)
    assert counts(resumed.ledger) == {"disable": {"done": 40}, "revoke-sessions": {"done": 40}}
    for uid in unknown:
        assert resumed.sim.record.operations(uid) == ["disable", "revoke"]
    assert not any(u.accountEnabled for u in directory)


async def test_a_disable_only_throttled_past_the_retry_window_holds_back_its_revoke(
    tmp_path: Path,
) -> None:
    """Only 429s: Graph never applied the disable, so it stays planned, and so does the
    revoke: revoking before the block would let the attacker sign in again."""
    users = ids(5)
    sent = await _send(
        tmp_path,
        {"disable": users, "revoke-sessions": users},
        directory_faults={"429": 1.0},
        retry_for=0,
    )
    assert sent.outcome.counts == {}
    assert set(sent.states("disable").values()) == {"planned"}
    assert set(sent.states("revoke-sessions").values()) == {"planned"}
    assert [w.op for w in sent.sim.record.writes] == ["disable"] * 5  # no revoke sent


def _stop_on_first_request(stop: StopSignal, budget: Budget) -> Observer:
    """An observer that asks ``stop`` once, at the first request on ``budget``."""
    asked: list[bool] = []

    def observer(event: str, **fields: Any) -> None:
        if event == "request" and fields.get("budget") == budget.value and not asked:
            asked.append(True)
            stop.ask()

    return observer


async def test_a_stop_counts_the_steps_waiting_to_be_retried(tmp_path: Path) -> None:
    """A first stop while the IP lane has a request in flight: the directory lane stops
    taking steps; those that got a 5xx and wait for their retry become unknown, and the
    outcome counts them as the ledger does."""
    stop = StopSignal()
    users = ids(40)
    sent = await _send(
        tmp_path,
        {"confirm": ids(60, seed=2), "disable": users},
        stop=stop,
        observer=_stop_on_first_request(stop, Budget.DIRECTORY_WRITES),
        latency_min_seconds=0.1,
        latency_max_seconds=0.1,
        directory_faults={"500": 0.5},
        seed=1,
        backoff=(LONG_BACKOFF, LONG_BACKOFF),
    )
    assert sent.outcome.interrupted
    ledger = counts(sent.ledger)
    assert ledger["disable"].get("unknown", 0) > 0
    for action in ("confirm", "disable"):
        for state in ("done", "failed", "unknown"):
            assert sent.outcome.counts.get(action, {}).get(state, 0) == ledger[action].get(
                state, 0
            ), (action, state)
    assert sent.seconds < LONG_BACKOFF / 4  # it did not wait for the back-off of those it let go


async def test_a_first_stop_does_not_wait_for_the_back_off_of_steps_it_lets_go(
    tmp_path: Path,
) -> None:
    """Stopped while an IP request is in flight and every directory step waits for its retry
    (30-60 s): the run ends once that request is answered, not when the back-off is over."""
    stop = StopSignal()
    users = ids(10)
    sent = await _send(
        tmp_path,
        {"confirm": ids(120, seed=2), "disable": users},
        stop=stop,
        observer=_stop_on_first_request(stop, Budget.IDENTITY_PROTECTION),
        latency_min_seconds=0.1,
        latency_max_seconds=0.1,
        directory_faults={"500": 1.0},
        backoff=(LONG_BACKOFF, LONG_BACKOFF),
    )
    assert sent.outcome.interrupted
    assert sent.outcome.counts == {"confirm": {"done": 120}, "disable": {"unknown": 10}}
    assert sent.seconds < LONG_BACKOFF / 4
