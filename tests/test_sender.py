"""The Identity Protection lane (lists of up to 60 IDs) through ``send``, against the simulator
in-process: states, attempts, bisection, retries, pacing, stops and the breaker."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from batcher.actions import ACTIONS, Budget
from batcher.auth import StaticToken
from batcher.calls import Caller, StopSignal
from batcher.errors import AuthError
from batcher.eventlog import Observer
from batcher.ledger import StepState
from batcher.simulator import GraphSimulator
from batcher.workers.send import HOPELESS_AFTER, LaneContext, SendOutcome, Work, send
from tests.helpers import TEST_TOKEN, graph_client, ids, paced_caller, sim_settings, step_ledger
from tests.virtual_time import VirtualTime

pytestmark = pytest.mark.anyio
CONFIRM = ACTIONS["confirm"]
ACCEPTED = "confirmCompromised"  # the simulator's name for what confirm applies


@dataclass
class Sent:
    outcome: SendOutcome
    sim: GraphSimulator
    ledger: Path
    caller: Caller

    @property
    def accepted(self) -> list[str]:
        return self.sim.record.accepted[ACCEPTED]

    def states(self) -> dict[str, str]:
        with sqlite3.connect(self.ledger) as db:
            return dict(db.execute("SELECT user_id, state FROM steps").fetchall())

    def in_state(self, state: StepState) -> set[str]:
        return {uid for uid, s in self.states().items() if s == state}

    def query(self, sql: str) -> list[Any]:
        with sqlite3.connect(self.ledger) as db:
            return db.execute(sql).fetchall()


async def _send(
    tmp_path: Path,
    user_ids: list[str],
    *,
    batch_size: int = 60,
    max_in_flight: int = 2,
    tokens: StaticToken | None = None,
    timeout: float = 5.0,
    stop: StopSignal | None = None,
    time: VirtualTime | None = None,
    **options: Any,
) -> Sent:
    """Send confirm for ``user_ids``: ``options`` are simulator settings, or the caller's
    (ip, retry_for, backoff, sleep, grace, observer). ``time``: the pacers, back-offs and
    Graph's budget on that virtual clock."""
    caller_keys = {"ip", "retry_for", "backoff", "sleep", "grace", "observer"}
    caller = paced_caller(time=time, **{k: v for k, v in options.items() if k in caller_keys})
    changes = {"rate_per_second": 1000.0, "burst": 20}
    changes.update({k: v for k, v in options.items() if k not in caller_keys})
    budget_clock = {} if time is None else {"budget_clock": time.clock}
    sim = GraphSimulator(sim_settings(**changes), tokens={TEST_TOKEN}, **budget_clock)
    path = tmp_path / "ledger.sqlite"
    ledger = step_ledger(path, {"confirm": user_ids})
    try:
        async with contextlib.AsyncExitStack() as stack:
            if time is not None:
                await stack.enter_async_context(time.running())
            client = await stack.enter_async_context(graph_client(sim, tokens, timeout, time))
            lanes = LaneContext(ledger, client, caller, max_in_flight, control=caller.control)
            outcome = await send(lanes, [Work(CONFIRM, user_ids)], batch_size, stop)
    finally:
        ledger.close()
    return Sent(outcome, sim, path, caller)


def _recording_sleep(sleeps: list[float]) -> Any:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return sleep


def _stop_after(stop: StopSignal, answers: int, times: int, at: list[float]) -> Observer:
    """An observer that asks ``stop`` ``times`` times when the ``answers``-th answer came."""
    seen = 0

    def observer(event: str, **fields: Any) -> None:
        nonlocal seen
        if event == "request":
            seen += 1
            if seen == answers:
                at.append(time.monotonic())
                for _ in range(times):
                    stop.ask()

    return observer


async def test_every_attempt_is_recorded_with_its_request_ids(tmp_path: Path) -> None:
    sleeps: list[float] = []
    sent = await _send(
        tmp_path,
        ids(40),
        batch_size=20,
        faults={"500": 0.5},
        seed=3,
        backoff=(0.5, 4.0),
        sleep=_recording_sleep(sleeps),
    )
    assert sent.outcome.counts == {"confirm": {"done": 40}}
    assert set(sent.states().values()) == {"done"}
    attempts = sent.query("SELECT http_status, request_id, client_request_id FROM attempts")
    statuses = sorted(a[0] for a in attempts)
    assert statuses.count(204) == 2
    assert statuses.count(500) == sent.sim.record.statuses[500] >= 1
    assert len(attempts) == sent.sim.record.requests == sent.outcome.requests
    assert all(a[1] for a in attempts)  # Graph's request-id kept for every answer
    assert len({a[2] for a in attempts}) == len(attempts)  # a fresh client-request-id each time
    assert sleeps and all(s >= 0.5 for s in sleeps)  # a 5xx without Retry-After backs off


async def test_transient_errors_past_the_retry_window_leave_ids_unknown(tmp_path: Path) -> None:
    sent = await _send(tmp_path, ids(5), faults={"503": 1.0}, retry_for=0)
    assert sent.outcome.counts == {"confirm": {"unknown": 5}}
    assert set(sent.states().values()) == {"unknown"}  # a 503 may have been applied


async def test_only_429s_past_the_retry_window_leave_ids_planned(tmp_path: Path) -> None:
    sent = await _send(tmp_path, ids(5), faults={"429": 1.0}, retry_for=0)
    assert sent.outcome.counts == {}
    assert set(sent.states().values()) == {"planned"}  # a 429 says it was never applied
    assert sent.query("SELECT DISTINCT attempts, last_status FROM steps") == [(1, 429)]
    assert sent.accepted == []


async def test_a_400_is_bisected_down_to_the_offending_ids(tmp_path: Path) -> None:
    user_ids = ids(60)
    bad = {user_ids[17], user_ids[44]}
    sent = await _send(tmp_path, user_ids, bad_ids=sorted(bad))
    assert sent.outcome.counts == {"confirm": {"done": 58, "failed": 2}}
    assert sent.in_state(StepState.FAILED) == bad
    assert sorted(sent.accepted) == sorted(set(user_ids) - bad)
    # bisection: log2(60) levels, two offenders: far fewer requests than one per ID
    assert sent.sim.record.requests <= 1 + 2 * 2 * 6
    batches = dict(sent.query("SELECT state, COUNT(*) FROM batches GROUP BY state"))
    assert "sending" not in batches  # every split parent is marked split, none left open
    assert batches["failed"] == 2 and batches["split"] >= 2
    reasons = sent.query("SELECT DISTINCT last_status, error_code FROM steps WHERE state='failed'")
    assert reasons == [(400, "invalidRequest")]


async def test_a_400_for_every_id_stops_splitting_after_two_batches(tmp_path: Path) -> None:
    user_ids = ids(40)
    sent = await _send(tmp_path, user_ids, batch_size=10, max_in_flight=1, bad_ids=user_ids)
    assert sent.outcome.counts == {"confirm": {"failed": 40}}
    # two batches of 10 split all the way (2 x 19 requests), then one request per batch
    assert HOPELESS_AFTER == 2
    assert sent.sim.record.requests == 2 * 19 + 2
    assert set(sent.states().values()) == {"failed"}


class RefusedRenewal(StaticToken):
    """Entra refusing the renewal after the third token (what cannot run here)."""

    def __init__(self) -> None:
        super().__init__(TEST_TOKEN)
        self.calls = 0

    async def token(self) -> str:
        self.calls += 1
        if self.calls > 3:
            raise AuthError("sign-in refused (AADSTS7000222: the client secret expired)")
        return self.value


async def test_a_sign_in_that_fails_mid_run_stops_it_resumably(tmp_path: Path) -> None:
    sent = await _send(tmp_path, ids(100), batch_size=10, max_in_flight=1, tokens=RefusedRenewal())
    assert isinstance(sent.outcome.stopped_by, AuthError)
    assert "AADSTS7000222" in str(sent.outcome.stopped_by)
    assert sent.outcome.counts == {"confirm": {"done": 30}}
    assert sorted(sent.states().values()) == ["done"] * 30 + ["planned"] * 70  # the rest resumable
    assert len(sent.accepted) == 30


async def test_a_refused_token_trips_the_breaker_within_a_few_requests(tmp_path: Path) -> None:
    sent = await _send(tmp_path, ids(300), tokens=StaticToken("wrong"))
    assert isinstance(sent.outcome.stopped_by, AuthError)
    assert "401" in str(sent.outcome.stopped_by)
    assert sent.outcome.counts == {}
    assert 1 <= sent.sim.record.statuses[401] <= 4  # stops within a few requests
    assert set(sent.states().values()) == {"planned"}  # every ID resumable


async def test_a_403_trips_the_breaker_at_once_naming_the_permission(tmp_path: Path) -> None:
    sent = await _send(tmp_path, ids(300), permission_denied=True)
    stopped = sent.outcome.stopped_by
    assert isinstance(stopped, AuthError)
    assert "IdentityRiskyUser.ReadWrite.All" in str(stopped)
    assert "Security Administrator" in str(stopped)
    assert 1 <= sent.sim.record.statuses[403] <= 2  # at once: only what was already in flight
    assert set(sent.states().values()) == {"planned"}


@pytest.mark.parametrize("fault", ["429", "500", "502", "503", "504", "reset", "lost"])
async def test_every_transient_fault_is_retried_until_done(tmp_path: Path, fault: str) -> None:
    user_ids = ids(120)
    sleeps: list[float] = []
    sent = await _send(
        tmp_path,
        user_ids,
        batch_size=10,
        faults={fault: 0.5},
        seed=11,
        sleep=_recording_sleep(sleeps),
    )
    assert sent.outcome.counts == {"confirm": {"done": 120}}
    assert set(sent.states().values()) == {"done"}
    record = sent.sim.record
    happened = record.faults[fault] + record.statuses.get(int(fault) if fault.isdigit() else 0, 0)
    assert happened > 0
    assert set(sent.accepted) == set(user_ids)
    if fault == "lost":  # applied, answer lost: sent again, so applied twice
        assert len(sent.accepted) > len(user_ids)
    else:
        assert len(sent.accepted) == len(user_ids)


async def test_a_timeout_is_retried_and_the_ids_done(tmp_path: Path) -> None:
    sent = await _send(
        tmp_path,
        ids(40),
        batch_size=20,
        timeout=0.1,
        faults={"hang": 0.3},
        hang_seconds=5.0,
        seed=2,
        sleep=_recording_sleep([]),
    )
    assert sent.outcome.counts == {"confirm": {"done": 40}}
    assert sent.sim.record.faults["hang"] > 0
    outcomes = {r[0] for r in sent.query("SELECT outcome FROM attempts")}
    assert outcomes == {"no_answer", "accepted"}


async def test_retry_after_holds_every_request_that_long(tmp_path: Path) -> None:
    sent = await _send(
        tmp_path,
        ids(60),
        batch_size=10,
        max_in_flight=1,
        faults={"503": 0.3},
        retry_after_seconds=0.05,
        seed=4,
    )
    assert sent.outcome.counts == {"confirm": {"done": 60}}
    answers = sent.sim.record.answers
    holds = [t for t, status in answers if status == 503]
    assert holds
    for held_at in holds:
        later = [t for t, _ in answers if t > held_at]
        if later:
            assert min(later) - held_at >= 0.048  # nobody started before Retry-After ran out


async def test_a_429_without_retry_after_slows_the_shared_pace(tmp_path: Path) -> None:
    """On one virtual clock (the pacer's and Graph's budget): the run outpaces Graph's budget
    however slowly a loaded host runs (on the host's clock, a slow host stayed under it)."""
    user_ids = ids(100)
    sent = await _send(
        tmp_path,
        user_ids,
        batch_size=10,
        max_in_flight=4,
        ip=200.0,
        rate_per_second=40.0,
        burst=1,
        latency_max_seconds=0.0,
        time=VirtualTime(),
    )
    assert sent.outcome.counts == {"confirm": {"done": 100}}
    pacer = sent.caller.pacers[Budget.IDENTITY_PROTECTION]
    record = sent.sim.record
    assert record.statuses[429] == sent.outcome.throttled == pacer.throttles > 0
    assert 1 <= pacer.slowdowns <= pacer.throttles  # one shared pace, slowed by its 429s
    assert sorted(sent.accepted) == sorted(user_ids)


async def _stopped_600(tmp_path: Path, *, latency: float, stops: int) -> tuple[Sent, list[float]]:
    """600 IDs, 4 in flight at 100 requests/s and ``latency`` s each, stopped ``stops`` times
    once the first answer came; also returns when each stop was asked."""
    stop, at = StopSignal(), list[float]()
    sent = await _send(
        tmp_path,
        ids(600),
        max_in_flight=4,
        ip=100.0,
        latency_min_seconds=latency,
        latency_max_seconds=latency,
        stop=stop,
        observer=_stop_after(stop, 1, stops, at),
    )
    return sent, at


async def test_a_stop_while_batches_wait_for_the_pacer_leaves_them_planned_unsent(
    tmp_path: Path,
) -> None:
    """The first stop lets what is in flight finish; batches waiting for their turn are not
    sent and not recorded: planned, 0 attempts, never called unknown."""
    sent, at = await _stopped_600(tmp_path, latency=0.02, stops=1)
    assert sent.outcome.interrupted and at
    done = sent.in_state(StepState.DONE)
    assert done == set(sent.accepted) and len(done) >= 60
    assert sent.in_state(StepState.UNKNOWN) == set()
    planned = sent.in_state(StepState.PLANNED)
    assert len(done) + len(planned) == 600 and planned
    assert sent.query("SELECT DISTINCT attempts FROM steps WHERE state = 'planned'") == [(0,)]
    assert sent.outcome.counts == {"confirm": {"done": len(done)}}
    (attempts,) = sent.query("SELECT COUNT(*) FROM attempts")[0]
    assert attempts == sent.sim.record.requests == sent.outcome.requests < 10


async def test_a_second_stop_cancels_at_once_and_what_was_in_flight_is_unknown(
    tmp_path: Path,
) -> None:
    sent, at = await _stopped_600(tmp_path, latency=0.2, stops=2)
    assert sent.outcome.interrupted and at
    in_flight = {
        uid
        for (uid,) in sent.query(
            "SELECT s.user_id FROM steps s JOIN attempts a USING (batch_id) WHERE a.outcome IS NULL"
        )
    }
    unknown = sent.in_state(StepState.UNKNOWN)
    assert unknown == in_flight and unknown  # only what was in flight, not answered
    assert not unknown & set(sent.accepted)  # cancelled before the simulator applied them
    assert sent.in_state(StepState.DONE) == set(sent.accepted) and sent.accepted
    assert sent.query("SELECT DISTINCT attempts FROM steps WHERE state = 'planned'") == [(0,)]
    assert sent.outcome.of("confirm", StepState.UNKNOWN) == len(unknown)


async def test_a_first_stop_ends_once_nothing_is_in_flight_even_while_a_batch_waits_to_be_retried(
    tmp_path: Path,
) -> None:
    """Stopped at the second batch's 500 while the first is in flight (0.1 s): once that one
    is answered nothing is in flight, so the run ends; the second batch, waiting for a
    back-off that never ends, is let go (unknown: a 500 may have been applied): the run could
    only end without waiting it out, however slowly a loaded host runs."""
    stop, at, backoffs = StopSignal(), list[float](), list[float]()

    async def never_over(seconds: float) -> None:
        backoffs.append(seconds)
        await anyio.sleep_forever()

    with anyio.fail_after(30):  # had it waited for the back-off, it would fail here
        sent = await _send(
            tmp_path,
            ids(120),
            faults={"500": 0.5},
            seed=0,  # the first request draws no fault, the second a 500
            latency_min_seconds=0.1,
            latency_max_seconds=0.1,
            backoff=(1.0, 1.0),
            sleep=never_over,
            stop=stop,
            observer=_stop_after(stop, 1, 1, at),
        )
    assert sent.outcome.interrupted
    assert sent.outcome.counts == {"confirm": {"done": 60, "unknown": 60}}
    assert sent.sim.record.statuses[500] == 1
    assert len(at) == 1 and len(backoffs) == 1  # the stop came while the back-off was on
