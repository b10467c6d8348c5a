"""`undo` and `verify` over a Job, against the simulator's own state."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import polars as pl
import pytest

from batcher.calls import StopSignal
from batcher.errors import LedgerError, NotConfirmed
from batcher.job.ledgers import undo_ledger
from batcher.job.summary import Summary
from batcher.ledger import APPLICATION_ID, MIGRATIONS, Ledger, WriterLock
from batcher.report.files import read_report
from batcher.simulator import SIMULATED_TENANT
from tests.helpers import (
    Hooked,
    Rig,
    counts,
    ids,
    runs_of,
    sim_settings,
    states,
    write_ids,
)

CONFIRM = "confirmCompromised"


def _confirmed(rig: Rig, values: list[str]) -> Path:
    rig.run(write_ids(rig.tmp_path / "ids.csv", values))
    return rig.ledger_for()


def _verify_statuses(report: str) -> dict[str, str]:
    frame = pl.read_csv(report, infer_schema=False)
    return dict(zip(frame["user_id"], frame["verify_status"], strict=True))


# -- undo -----------------------------------------------------------------------------------------
def test_undo_dismisses_exactly_what_the_ledger_confirmed_and_no_one_else(tmp_path: Path) -> None:
    values = ids(130)
    bad = [values[121], values[127]]  # in the last request, of 10: a short split search
    rig = Rig(tmp_path, sim=sim_settings(bad_ids=bad))
    ledger = _confirmed(rig, values)
    record = rig.record
    outsider = str(uuid.UUID(int=99, version=4))
    record.apply(CONFIRM, [outsider], "confirmedCompromised")  # confirmed by someone else

    with pytest.raises(NotConfirmed):
        rig.undo(ledger, confirm=lambda preview: False)  # the operator said no
    assert record.accepted["dismiss"] == [] and runs_of(undo_ledger(ledger)) == []
    plan = rig.undo(ledger, dry_run=True)
    assert (plan.actions[0].name, plan.to_send, plan.dry_run) == ("dismiss", 128, True)

    done = rig.undo(ledger)
    assert done.command == "undo" and done.actions[0].done == 128
    confirmed = set(values) - set(bad)
    assert sorted(record.accepted["dismiss"]) == sorted(confirmed)
    assert {u for u, s in record.risk_state.items() if s == "dismissed"} == confirmed
    assert record.risk_state[outsider] == "confirmedCompromised"  # not in our ledger: untouched
    assert all(b not in record.risk_state for b in bad)
    reader = Ledger.open_existing(undo_ledger(ledger))
    try:
        assert reader.actions() == ("dismiss",) and reader.meta()["undo_of"] == str(ledger)
    finally:
        reader.close()
    assert counts(undo_ledger(ledger)) == {"dismiss": {"done": 128}}
    again = rig.undo(ledger)
    assert again.actions[0].already_done == 128 and again.to_send == 0
    assert len(record.accepted["dismiss"]) == 128


def test_undo_also_dismisses_steps_whose_answer_was_lost(tmp_path: Path) -> None:
    values = ids(30)
    lossy = Rig(tmp_path, sim=sim_settings(faults={"lost": 1.0}), send={"retry_for_seconds": 0})
    summary = lossy.run(write_ids(tmp_path / "ids.csv", values))
    assert summary.unknown == 30  # Graph applied them; the answers never came
    assert set(lossy.record.risk_state) == set(values)
    lossy.sim.settings.faults.clear()  # Graph answers again
    plan = lossy.undo(lossy.ledger_for(), dry_run=True)
    assert plan.to_send == 30
    assert any("30 unknown: Graph may have applied them" in n for n in plan.notes)
    assert any("will be read before reversing" in n for n in plan.notes)
    assert lossy.undo(lossy.ledger_for()).actions[0].done == 30  # each read confirmed first
    assert set(lossy.record.accepted["dismiss"]) == set(values)


def test_undo_after_a_run_every_confirm_of_which_failed_with_5xx_dismisses_nobody(
    tmp_path: Path,
) -> None:
    """Every confirm answered 500, 502 or a reset: the steps are unknown, and Graph applied
    none. Undo reads each user's riskState before reversing and sends no dismiss."""
    values = ids(60)
    faults = {"500": 0.4, "502": 0.3, "reset": 0.3}
    rig = Rig(tmp_path, sim=sim_settings(faults=faults, seed=3), send={"retry_for_seconds": 0})
    summary = rig.run(write_ids(tmp_path / "ids.csv", values))
    assert summary.unknown == 60 and rig.record.accepted[CONFIRM] == []
    rig.sim.settings.faults.clear()

    done = rig.undo(rig.ledger_for())

    assert done.to_send == 0 and rig.record.accepted["dismiss"] == []
    assert any("60 confirm steps in doubt were read" in n for n in done.notes)


def _undo_stopped_after_2_requests(tmp_path: Path) -> tuple[Rig, list[str], Path, Summary]:
    """50 users confirmed, then an undo of them stopped once 2 of its requests of 10 left."""
    rig = Rig(tmp_path, send={"batch_size": 10, "max_in_flight": 1})
    values = ids(50)
    ledger = _confirmed(rig, values)
    rig.events = Hooked()
    stop = StopSignal()
    rig.events.at("request", 2, stop.ask)
    return rig, values, ledger, rig.undo(ledger, stop=stop)


def test_an_undo_stopped_midway_resumes_and_dismisses_each_user_once(tmp_path: Path) -> None:
    rig, values, ledger, first = _undo_stopped_after_2_requests(tmp_path)
    assert first.interrupted and 0 < first.actions[0].done < 50
    assert first.unknown == 0  # a first stop lets the request in flight land
    rest = rig.undo(ledger)
    assert rest.actions[0].already_done == first.actions[0].done
    assert rest.to_send == rest.actions[0].done == 50 - first.actions[0].done
    assert sorted(rig.record.accepted["dismiss"]) == sorted(values)  # each once
    assert set(states(undo_ledger(ledger)).values()) == {"done"}


def test_undo_refuses_an_undo_ledger(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ledger = _confirmed(rig, ids(5))
    rig.undo(ledger)
    with pytest.raises(LedgerError, match="an undo cannot be undone"):
        rig.undo(undo_ledger(ledger))


def test_undo_refuses_while_the_run_still_writes(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ledger = _confirmed(rig, ids(5))
    held = WriterLock.acquire(ledger)  # as a run still going would hold it
    try:
        with pytest.raises(LedgerError, match="another batcher is writing this ledger"):
            rig.undo(ledger)
    finally:
        held.release()
    assert rig.record.accepted["dismiss"] == []
    assert not undo_ledger(ledger).exists()


# -- verify ---------------------------------------------------------------------------------------
def test_verify_reads_back_confirmed_processing_and_not_confirmed(tmp_path: Path) -> None:
    values = ids(130)
    rig = Rig(tmp_path, sim=sim_settings(processing_seconds=3600))
    ledger = _confirmed(rig, values)
    record = rig.record
    for uid in values[:100]:  # these were applied an hour ago: processing is over
        record.applied_at[uid] -= 3600
    record.risk_state[values[0]] = "dismissed"  # someone dismissed this one since
    reads = record.reads

    result = rig.verify(ledger)
    got = result.actions["confirm"]
    assert (got["checked"], got["as_expected"], got["processing"]) == (130, 99, 30)
    assert got["not_as_expected"] == 1 and got["not_read"] == 0
    # a page of those confirmed, a page of those still at risk, then the one in neither
    assert result.requests == record.reads - reads == 3
    status = _verify_statuses(result.report)
    assert status[values[0]] == "not_confirmed"
    assert status[values[1]] == "confirmed"
    assert status[values[129]] == "processing"
    assert result.expected == {"confirm": "riskState confirmedCompromised"}


def test_verify_never_reports_a_user_it_did_not_read_400_still_processing(tmp_path: Path) -> None:
    values = ids(400)
    rig = Rig(tmp_path, sim=sim_settings(processing_seconds=3600))
    ledger = _confirmed(rig, values)
    result = rig.verify(ledger)
    assert result.actions["confirm"] == {
        "checked": 400,
        "as_expected": 0,
        "processing": 400,
        "not_as_expected": 0,
        "not_found": 0,
        "not_read": 0,
    }
    assert set(_verify_statuses(result.report).values()) == {"processing"}
    assert result.requests <= 4  # read in lists, not 400 reads at one a second


def test_a_few_ids_are_read_one_by_one(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ledger = _confirmed(rig, ids(8))
    reads = rig.record.reads
    result = rig.verify(ledger)
    assert result.total("as_expected") == 8 and rig.record.reads - reads == 8


def test_a_stop_during_verify_leaves_the_rest_not_read_and_unread_reads_only_those(
    tmp_path: Path,
) -> None:
    """--unread reads only what was not read, and leaves the report whole."""
    rig = Rig(tmp_path, send={"max_in_flight": 1})
    values = ids(12)
    ledger = _confirmed(rig, values)
    rig.events = Hooked()
    stop = StopSignal()
    rig.events.at("request", 4, stop.ask)
    first = rig.verify(ledger, stop=stop)
    assert first.interrupted
    read, unread = first.total("as_expected"), first.total("not_read")
    assert read >= 4 and unread > 0 and read + unread == 12
    status = _verify_statuses(first.report)
    assert list(status.values()).count("not_read") == unread
    assert list(status.values()).count("confirmed") == read

    reads = rig.record.reads
    rest = rig.verify(ledger, unread=True)
    assert rig.record.reads - reads == unread  # only what the first did not read
    assert rest.total("checked") == unread and rest.total("as_expected") == unread
    assert _verify_statuses(rest.report) == dict.fromkeys(values, "confirmed")  # whole again
    nothing = rig.verify(ledger, unread=True)
    assert nothing.nothing_to_verify and "nothing left unread" in nothing.nothing_to_verify


def test_verify_of_a_ledger_with_nothing_done_says_resume_first(tmp_path: Path) -> None:
    sim = sim_settings(faults={"429": 1.0}, retry_after_seconds=0.01)
    rig = Rig(tmp_path, sim=sim, send={"retry_for_seconds": 0})
    ledger = _confirmed(rig, ids(30))
    reads = rig.record.reads
    result = rig.verify(ledger)
    assert result.nothing_to_verify is not None
    assert "30 steps not sent yet" in result.nothing_to_verify
    assert result.nothing_to_verify.endswith("resume first")
    assert result.requests == 0 and rig.record.reads == reads


def test_verify_after_undo_expects_dismissed(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ledger = _confirmed(rig, ids(40))
    rig.undo(ledger)
    result = rig.verify(undo_ledger(ledger))
    assert result.expected == {"dismiss": "riskState dismissed"}
    assert result.actions["dismiss"]["as_expected"] == 40 and result.total("checked") == 40


@pytest.mark.parametrize("suffix", [".parquet", ".json"])
def test_unread_finishes_a_verify_written_in_any_format(tmp_path: Path, suffix: str) -> None:
    rig = Rig(tmp_path, send={"max_in_flight": 1})
    ledger = _confirmed(rig, ids(8))
    rig.events = Hooked()
    stop = StopSignal()
    rig.events.at("request", 3, stop.ask)
    out = tmp_path / f"verify{suffix}"
    first = rig.verify(ledger, out=out, stop=stop)
    unread = first.total("not_read")
    assert unread > 0 and first.report == str(out)
    reads = rig.record.reads
    rest = rig.verify(ledger, out=out, unread=True)
    assert rest.total("checked") == unread == rig.record.reads - reads
    whole = read_report(out)
    assert whole.height == 8 and set(whole["verify_status"]) == {"confirmed"}


def test_the_same_run_after_a_stopped_undo_confirms_again_only_those_dismissed(
    tmp_path: Path,
) -> None:
    rig, _, _, _ = _undo_stopped_after_2_requests(tmp_path)
    dismissed = rig.record.accepted["dismiss"]
    assert 0 < len(dismissed) < 50
    rig.events = Hooked()
    again = rig.run(rig.tmp_path / "ids.csv")
    assert again.actions[0].done == len(dismissed)
    assert again.actions[0].already_done == 50 - len(dismissed)
    assert sorted(rig.record.accepted[CONFIRM][50:]) == sorted(dismissed)
    assert set(rig.record.risk_state.values()) == {"confirmedCompromised"}


# -- the ledger's tenant, a dry run that writes nothing, steps in doubt -------------------------
def _rehearsal(tmp_path: Path) -> tuple[Rig, Path]:
    """A run against the simulator (its ledger names the tenant "simulator"), and a rig whose
    config signs in to the simulated tenant ([auth] tenant_id)."""
    rehearsal = Rig(tmp_path, graph={"target": "simulator"})
    ledger = _confirmed(rehearsal, ids(10))
    reader = Ledger.open_existing(ledger)
    try:
        assert reader.meta()["tenant"] == "simulator"
    finally:
        reader.close()
    return Rig(tmp_path), ledger


def test_undo_refuses_a_ledger_written_for_another_tenant_and_writes_nothing(
    tmp_path: Path,
) -> None:
    real, ledger = _rehearsal(tmp_path)
    on_disk = ledger.read_bytes()
    for dry_run in (True, False):
        with pytest.raises(LedgerError) as refused:
            real.undo(ledger, dry_run=dry_run)
        message = str(refused.value)
        assert "\n" not in message
        assert "written for tenant simulator (global cloud), but the config signs in to " in message
        assert f"{SIMULATED_TENANT} (global cloud); undo with the config of that run" in message
    assert real.record.requests == 0 and real.record.accepted["dismiss"] == []
    assert not undo_ledger(ledger).exists() and ledger.read_bytes() == on_disk


def test_a_token_that_names_no_tenant_signs_in_first_for_run_verify_and_undo(
    tmp_path: Path,
) -> None:
    """Without [auth] tenant_id, a token that is not a JWT: each command asks Graph which
    tenant it signs in to (GET /organization) before it opens a ledger."""
    _, rehearsed = _rehearsal(tmp_path)  # a ledger for the tenant "simulator"
    unnamed = Rig(tmp_path, auth={})
    ledger = unnamed.ledger_for("unnamed")
    unnamed.run(write_ids(tmp_path / "few.csv", ids(8)), ledger=ledger)
    assert unnamed.record.tenant_reads == 1
    reader = Ledger.open_existing(ledger)
    try:
        assert reader.meta()["tenant"] == SIMULATED_TENANT
    finally:
        reader.close()
    assert unnamed.verify(ledger).total("as_expected") == 8
    assert unnamed.record.tenant_reads == 2
    with pytest.raises(LedgerError, match=f"config signs in to {SIMULATED_TENANT} "):
        unnamed.undo(rehearsed)  # asked, then refused: another tenant's ledger
    assert unnamed.record.tenant_reads == 3 and unnamed.record.accepted["dismiss"] == []


def test_verify_refuses_a_ledger_written_for_another_tenant(tmp_path: Path) -> None:
    real, ledger = _rehearsal(tmp_path)
    with pytest.raises(LedgerError, match="verify with the config of that run"):
        real.verify(ledger)
    assert real.record.reads == 0
    assert not (ledger.parent / f"{ledger.stem}.verify.csv").exists()


def test_undo_dry_run_leaves_the_original_ledger_byte_for_byte_as_it_was(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    values = ids(12)
    ledger = _confirmed(rig, values[:10])
    killed = Ledger.open(ledger)  # a run killed with a request out for two more users
    killed.add_users(pl.DataFrame({"user_id": values[10:]}))
    killed.add_steps("confirm", pl.Series(values[10:]))
    killed.start_batch("confirm", [(uid, "confirm") for uid in values[10:]], "crid")
    killed.close()
    before = (ledger.read_bytes(), ledger.stat().st_mtime_ns)
    files = sorted(p.name for p in ledger.parent.iterdir())

    plan = rig.undo(ledger, dry_run=True)
    assert plan.to_send == 12  # the two in doubt too: a request carrying them was out
    assert any("2 unknown" in n for n in plan.notes)
    assert (ledger.read_bytes(), ledger.stat().st_mtime_ns) == before
    assert sorted(p.name for p in ledger.parent.iterdir()) == files  # no lock, no undo ledger
    assert states(ledger) == dict.fromkeys(values[:10], "done") | dict.fromkeys(
        values[10:], "unknown"
    )


def test_undo_dry_run_of_an_older_ledger_does_not_migrate_it(tmp_path: Path) -> None:
    ledger = tmp_path / "old.sqlite"
    values = ids(6)
    with sqlite3.connect(ledger) as db:  # a version-2 ledger, as batcher 0.2 wrote it
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.executescript(MIGRATIONS[1] + MIGRATIONS[2])
        db.execute("PRAGMA user_version = 2")
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("action", CONFIRM), ("tenant", SIMULATED_TENANT), ("cloud", "global")],
        )
        db.executemany(
            "INSERT INTO ids (user_id, state) VALUES (?, ?)",
            [(i, "confirmed") for i in values[:4]] + [(i, "failed") for i in values[4:]],
        )
    before = (ledger.read_bytes(), ledger.stat().st_mtime_ns)
    plan = Rig(tmp_path).undo(ledger, dry_run=True)
    assert (plan.actions[0].name, plan.to_send) == ("dismiss", 4)
    assert (ledger.read_bytes(), ledger.stat().st_mtime_ns) == before
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


def test_verify_reads_steps_whose_answer_was_lost_and_finds_them_applied(tmp_path: Path) -> None:
    values = ids(30)
    rig = Rig(tmp_path, sim=sim_settings(faults={"lost": 1.0}), send={"retry_for_seconds": 0})
    ledger = _confirmed(rig, values)
    assert counts(ledger) == {"confirm": {"unknown": 30}}  # applied; the answers never came
    result = rig.verify(ledger)  # reads are not lost: only actions draw the fault
    assert result.nothing_to_verify is None
    assert result.actions["confirm"]["checked"] == result.actions["confirm"]["as_expected"] == 30
    assert _verify_statuses(result.report) == dict.fromkeys(values, "confirmed")


def test_undo_after_the_run_is_run_again_dismisses_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    values = ids(20)
    ledger = _confirmed(rig, values)
    rig.undo(ledger)
    rig.run(rig.tmp_path / "ids.csv")  # confirmed again: the first undo no longer holds
    on_disk = undo_ledger(ledger).read_bytes()
    plan = rig.undo(ledger, dry_run=True)
    assert (plan.to_send, plan.actions[0].already_done) == (20, 0)
    assert undo_ledger(ledger).read_bytes() == on_disk
    again = rig.undo(ledger)
    assert again.actions[0].done == 20
    assert sorted(rig.record.accepted["dismiss"][20:]) == sorted(values)
    assert set(rig.record.risk_state.values()) == {"dismissed"}
    assert rig.undo(ledger).to_send == 0  # and once is enough
