"""The sender against the real simulator: states, attempts, isolation, the auth breaker."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from batcher.auth import StaticToken
from batcher.errors import AuthError, Forbidden, Unauthorized
from batcher.graph import GraphClient
from batcher.ledger import Ledger, RunIdentity
from batcher.pacer import Pacer
from batcher.sender import AuthBreaker, Sender, SendOutcome
from tests.conftest import FAST, TEST_TOKEN

ACTION = "confirmCompromised"
IDENTITY = RunIdentity("confirmCompromised", "t", "global", "v1.0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _ids(n: int) -> list[str]:
    return [f"{i:08x}-0000-4000-8000-00000000000{i % 10}" for i in range(1, n + 1)]


async def _run(
    url: str, ledger: Ledger, batches: list[list[str]], *, token: str = TEST_TOKEN, **kw: Any
) -> SendOutcome:
    ids = [i for b in batches for i in b]
    ledger.add_ids(
        pl.DataFrame(
            {"user_id": ids, "source_file": ["f"] * len(ids), "source_row": range(len(ids))}
        )
    )
    sleeps: list[float] = kw.pop("sleeps", [])

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with httpx.AsyncClient(timeout=kw.pop("timeout", 5)) as http:
        runner = Sender(
            ledger,
            GraphClient(http, url, "v1.0", StaticToken(token)),
            kw.pop("pacer", None) or Pacer(kw.pop("rate", 500)),
            action="confirmCompromised",
            max_in_flight=kw.pop("max_in_flight", 2),
            retry_for_seconds=kw.pop("retry_for_seconds", 30),
            backoff=(0.5, 4.0),
            sleep=record_sleep,
        )
        return await runner.run(batches)


def _states(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT user_id, state FROM ids").fetchall())


@pytest.mark.anyio
async def test_every_attempt_is_recorded_with_its_request_ids(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(FAST.model_copy(update={"faults": {"500": 0.5}, "seed": 3}))
    ledger = Ledger.open(tmp_path / "l.sqlite", IDENTITY)
    ids = _ids(40)
    sleeps: list[float] = []
    outcome = await _run(sim.url, ledger, [ids[:20], ids[20:]], sleeps=sleeps)
    ledger.close()
    assert outcome.confirmed == 40
    assert set(_states(tmp_path / "l.sqlite").values()) == {"confirmed"}
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        attempts = db.execute(
            "SELECT http_status, request_id, client_request_id FROM attempts"
        ).fetchall()
    statuses = sorted(a[0] for a in attempts)
    assert statuses.count(204) == 2
    assert statuses.count(500) == sim.simulator.record.statuses[500] >= 1
    assert all(a[1] for a in attempts)  # Graph's request-id kept for every answer
    assert len({a[2] for a in attempts}) == len(attempts)  # a fresh client-request-id each time
    assert sleeps and all(s >= 0.25 for s in sleeps)  # 5xx without Retry-After backs off


@pytest.mark.anyio
async def test_transient_errors_past_the_retry_window_leave_ids_unknown(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(FAST.model_copy(update={"faults": {"503": 1.0}}))
    ledger = Ledger.open(tmp_path / "l.sqlite", IDENTITY)
    outcome = await _run(sim.url, ledger, [_ids(5)], retry_for_seconds=0)
    ledger.close()
    assert (outcome.confirmed, outcome.unknown, outcome.failed) == (0, 5, 0)
    assert set(_states(tmp_path / "l.sqlite").values()) == {"unknown"}


@pytest.mark.anyio
async def test_a_400_is_bisected_down_to_the_offending_ids(
    tmp_path: Path, simulator_factory: Any
) -> None:
    ids = _ids(60)
    bad = {ids[17], ids[44]}
    sim = simulator_factory(FAST.model_copy(update={"bad_ids": sorted(bad)}))
    ledger = Ledger.open(tmp_path / "l.sqlite", IDENTITY)
    outcome = await _run(sim.url, ledger, [ids])
    ledger.close()
    assert (outcome.confirmed, outcome.failed) == (58, 2)
    states = _states(tmp_path / "l.sqlite")
    assert {i for i, s in states.items() if s == "failed"} == bad
    assert sorted(sim.simulator.record.accepted["confirmCompromised"]) == sorted(set(ids) - bad)
    # bisection: log2(60) levels, two offenders: far fewer requests than one per ID
    assert sim.simulator.record.requests <= 1 + 2 * 2 * 6
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        batch_states = dict(db.execute("SELECT state, COUNT(*) FROM batches GROUP BY state"))
    assert "sending" not in batch_states  # every split parent is marked split, none left open
    assert batch_states["failed"] == 2 and batch_states["split"] >= 2


@pytest.mark.anyio
async def test_a_400_for_every_id_stops_splitting_after_two_batches(
    tmp_path: Path, simulator_factory: Any
) -> None:
    ids = _ids(40)
    sim = simulator_factory(FAST.model_copy(update={"bad_ids": ids}))  # the request is refused
    ledger = Ledger.open(tmp_path / "l.sqlite", IDENTITY)
    outcome = await _run(
        sim.url, ledger, [ids[i : i + 10] for i in range(0, 40, 10)], max_in_flight=1
    )
    ledger.close()
    assert (outcome.confirmed, outcome.failed) == (0, 40)
    # two batches of 10 split all the way (2 x 19 requests), then one request per batch
    assert sim.simulator.record.requests == 2 * 19 + 2
    assert set(_states(tmp_path / "l.sqlite").values()) == {"failed"}


@pytest.mark.anyio
async def test_a_sign_in_that_fails_mid_run_stops_it_resumably(
    tmp_path: Path, simulator: Any
) -> None:
    class RefusedRenewal(StaticToken):
        """Entra refusing the renewal after the first token (what cannot run here)."""

        def __init__(self) -> None:
            super().__init__(TEST_TOKEN)
            self.calls = 0

        async def token(self) -> str:
            self.calls += 1
            if self.calls > 3:
                raise AuthError("sign-in refused (AADSTS7000222: the client secret expired)")
            return self.value

    ledger = Ledger.open(tmp_path / "l.sqlite", IDENTITY)
    ids = _ids(100)
    ledger.add_ids(pl.DataFrame({"user_id": ids, "source_file": "f", "source_row": range(100)}))
    async with httpx.AsyncClient(timeout=5) as http:
        sender = Sender(
            ledger,
            GraphClient(http, simulator.url, "v1.0", RefusedRenewal()),
            Pacer(500),
            action=ACTION,
            max_in_flight=1,
            retry_for_seconds=5,
        )
        outcome = await sender.run([ids[i : i + 10] for i in range(0, 100, 10)])
    ledger.close()
    assert outcome.stopped_by is not None and "AADSTS7000222" in str(outcome.stopped_by)
    assert outcome.confirmed == 30
    states = _states(tmp_path / "l.sqlite")
    assert sorted(states.values()).count("confirmed") == 30
    assert set(states.values()) <= {"confirmed", "sending", "planned"}  # the rest resumable


@pytest.mark.anyio
async def test_refused_token_trips_the_breaker_and_leaves_ids_resumable(
    tmp_path: Path, simulator: Any
) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite", IDENTITY)
    ids = _ids(300)
    batches = [ids[i : i + 60] for i in range(0, 300, 60)]
    outcome = await _run(simulator.url, ledger, batches, token="wrong")
    ledger.close()
    assert outcome.stopped_by is not None
    assert outcome.confirmed == outcome.failed == 0
    assert 1 <= simulator.simulator.record.statuses[401] <= 4  # stops within a few requests
    assert set(_states(tmp_path / "l.sqlite").values()) <= {"planned", "sending"}


def test_breaker_trips_on_403_at_once_and_on_401_twice_in_a_row() -> None:
    breaker = AuthBreaker()
    breaker.record(Unauthorized("401", status=401))
    assert breaker.tripped is None
    breaker.record(None)
    breaker.record(Unauthorized("401", status=401))
    assert breaker.tripped is None
    breaker.record(Unauthorized("401", status=401))
    assert breaker.tripped is not None
    forbidden = AuthBreaker()
    forbidden.record(Forbidden("403", status=403, code="Authorization_RequestDenied"))
    assert forbidden.tripped is not None
    assert "IdentityRiskyUser.ReadWrite.All" in str(forbidden.tripped)
    assert "Security Administrator" in str(forbidden.tripped)


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["429", "500", "502", "503", "504", "reset", "lost"])
async def test_every_transient_answer_is_retried_until_confirmed(
    tmp_path: Path, simulator_factory: Any, fault: str
) -> None:
    sim = simulator_factory(FAST.model_copy(update={"faults": {fault: 0.5}, "seed": 11}))
    ledger = Ledger.open(tmp_path / "l.sqlite", IDENTITY)
    ids = _ids(120)
    outcome = await _run(sim.url, ledger, [ids[i : i + 10] for i in range(0, 120, 10)])
    ledger.close()
    assert outcome.confirmed == 120
    assert set(_states(tmp_path / "l.sqlite").values()) == {"confirmed"}
    record = sim.simulator.record
    happened = record.faults[fault] + record.statuses.get(int(fault) if fault.isdigit() else 0, 0)
    assert happened > 0
    assert set(record.accepted[ACTION]) == set(ids)
    if fault == "lost":  # applied, answer lost: sent again, so accepted twice
        assert len(record.accepted[ACTION]) > len(ids)


@pytest.mark.anyio
async def test_a_timeout_is_retried_and_the_ids_confirmed(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(
        FAST.model_copy(update={"faults": {"hang": 0.3}, "hang_seconds": 5.0, "seed": 2})
    )
    ledger = Ledger.open(tmp_path / "l.sqlite", IDENTITY)
    ids = _ids(40)
    outcome = await _run(sim.url, ledger, [ids[:20], ids[20:]], timeout=0.3)
    ledger.close()
    assert outcome.confirmed == 40
    assert sim.simulator.record.faults["hang"] > 0
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        outcomes = {r[0] for r in db.execute("SELECT outcome FROM attempts")}
    assert "no_answer" in outcomes


@pytest.mark.anyio
async def test_retry_after_holds_every_request_that_long(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(
        FAST.model_copy(update={"faults": {"503": 0.3}, "retry_after_seconds": 0.25, "seed": 4})
    )
    ledger = Ledger.open(tmp_path / "l.sqlite", IDENTITY)
    ids = _ids(100)
    outcome = await _run(
        sim.url, ledger, [ids[i : i + 10] for i in range(0, 100, 10)], max_in_flight=1
    )
    ledger.close()
    assert outcome.confirmed == 100
    answers = sim.simulator.record.answers
    holds = [t for t, status in answers if status == 503]
    assert holds
    for held_at in holds:
        later = [t for t, _ in answers if t > held_at]
        if later:
            assert min(later) - held_at >= 0.24  # nobody started before Retry-After ran out


@pytest.mark.anyio
async def test_429_without_retry_after_slows_the_shared_pace(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(
        FAST.model_copy(update={"rate_per_second": 40.0, "burst": 1, "latency_max_seconds": 0})
    )
    ledger = Ledger.open(tmp_path / "l.sqlite", IDENTITY)
    ids = _ids(300)
    pacer = Pacer(200.0)
    outcome = await _run(
        sim.url, ledger, [ids[i : i + 10] for i in range(0, 300, 10)], pacer=pacer, max_in_flight=4
    )
    ledger.close()
    assert outcome.confirmed == 300
    assert sim.simulator.record.statuses[429] == outcome.throttled == pacer.throttles > 0
    assert 1 <= pacer.slowdowns <= pacer.throttles  # one shared pace, slowed by its 429s
    assert sorted(sim.simulator.record.accepted[ACTION]) == sorted(ids)
