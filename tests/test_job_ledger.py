"""The ledger through the jobs: replay, the report, one writer, foreign and old files, where
ledgers live and what the tenant's other recent ledgers already did."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import stat
import subprocess
import threading
from pathlib import Path

import polars as pl
import pytest

from batcher.calls import StopSignal
from batcher.errors import ConfigError, LedgerError
from batcher.job.ledgers import default_path
from batcher.job.resolve import ResolveOptions, resolve
from batcher.job.status import Status, status
from batcher.ledger import APPLICATION_ID, MIGRATIONS, REPORT_COLUMNS
from batcher.report.files import step_report, write_report
from batcher.simulator import SIMULATED_TENANT, GraphSimulator
from tests.helpers import (
    FAST,
    TEST_TOKEN,
    Hooked,
    Rig,
    counts,
    ids,
    report_frame,
    runs_of,
    sim_settings,
    states,
    write_ids,
)

CONFIRM = "confirmCompromised"


def _fixed(rig: Rig) -> GraphSimulator:
    """Graph as it is once the cause of the failures is fixed."""
    rig.sim = GraphSimulator(FAST, tokens={TEST_TOKEN})
    return rig.sim


# -- replay ---------------------------------------------------------------------------------------
def test_replay_sends_only_failed_steps_as_new_attempts(tmp_path: Path) -> None:
    values = ids(24)
    bad = [values[3], values[14], values[15]]
    rig = Rig(tmp_path, sim=sim_settings(bad_ids=bad))
    ledger = rig.ledger_for()
    first = rig.run(write_ids(tmp_path / "ids.csv", values))
    assert first.actions[0].failed == 3

    fixed = _fixed(rig)
    again = rig.replay(ledger)
    assert again.command == "replay"
    assert (again.to_send, again.actions[0].done) == (3, 3)
    assert again.actions[0].already_done == 21
    assert sorted(fixed.record.accepted[CONFIRM]) == sorted(bad)  # nothing else
    assert set(states(ledger).values()) == {"done"}
    assert [r["command"] for r in runs_of(ledger)] == ["run", "replay"]
    with sqlite3.connect(ledger) as db:
        runs_of_bad = db.execute(
            "SELECT DISTINCT a.run_id FROM attempts a JOIN steps s ON s.batch_id = a.batch_id "
            "WHERE s.user_id = ?",
            (bad[0],),
        ).fetchall()
    assert runs_of_bad == [(2,)]  # its winning batch is the replay's (the run's was split)
    replayed = pl.read_csv(again.report or "", infer_schema=False)  # the replay's own report
    assert sorted(replayed["user_id"]) == sorted(bad)
    assert set(replayed["state"]) == {"done"}


def test_replay_only_one_error_code_and_the_codes_listed_when_none_match(tmp_path: Path) -> None:
    values = ids(20)
    rig = Rig(tmp_path, sim=sim_settings(bad_ids=[values[0]]))
    ledger = rig.ledger_for()
    rig.run(write_ids(tmp_path / "first.csv", values[:10]))
    flaky = Rig(tmp_path, sim=sim_settings(faults={"503": 1.0}), send={"retry_for_seconds": 0})
    more = flaky.run(write_ids(tmp_path / "all.csv", values), ledger=ledger)
    assert more.unknown == 10  # Graph may have applied them

    fixed = _fixed(rig)
    with pytest.raises(LedgerError) as refused:
        rig.replay(ledger, only_code="NoSuchCode")
    assert "codes in this ledger: serviceNotAvailable (10), invalidRequest (1)" in str(
        refused.value
    )
    assert fixed.record.requests == 0
    only = rig.replay(ledger, only_code="invalidRequest")
    assert only.to_send == 1 and only.actions[0].not_selected == 10  # left out by --only
    assert fixed.record.accepted[CONFIRM] == [values[0]]
    assert list(states(ledger).values()).count("unknown") == 10  # left for another replay


def test_replay_of_an_action_the_ledger_does_not_record_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(write_ids(tmp_path / "ids.csv", ids(5)))
    with pytest.raises(LedgerError, match="pass one of those to --action"):
        rig.replay(rig.ledger_for(), action="disable")


# -- the report -----------------------------------------------------------------------------------
def test_report_has_one_row_per_user_per_action_with_graphs_answer_in_every_format(
    tmp_path: Path,
) -> None:
    values = ids(25)
    rig = Rig(tmp_path, sim=sim_settings(bad_ids=[values[7]]))
    summary = rig.run(write_ids(tmp_path / "ids.csv", values))
    ledger = rig.ledger_for()
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    frame = step_report(report_frame(ledger))  # as `batcher report` writes it
    readers = {
        ".csv": lambda out: pl.read_csv(out, infer_schema=False),
        ".parquet": pl.read_parquet,
        ".json": lambda out: pl.DataFrame(json.loads(out.read_text(encoding="utf-8"))),
    }
    written = {".csv": Path(summary.report or "")}  # the run writes its own, as CSV
    for suffix in (".parquet", ".json"):
        written[suffix] = tmp_path / f"report{suffix}"
        write_report(frame, written[suffix])
    for suffix, out in written.items():
        assert stat.S_IMODE(out.stat().st_mode) == 0o600, suffix
        got = readers[suffix](out)
        assert got.columns == [*REPORT_COLUMNS, "note"], suffix
        assert got.height == 25 and sorted(got["user_id"]) == sorted(values), suffix
        assert set(got["action"]) == {"confirm"} and set(got["matched_by"]) == {"object_id"}
        assert got["input_value"].to_list() == got["user_id"].to_list()
        failed = got.filter(pl.col("state") == "failed").row(0, named=True)
        assert failed["user_id"] == values[7]
        assert str(failed["last_http_status"]) == "400"
        assert failed["error_code"] == "invalidRequest"
        assert failed["request_id"] and failed["client_request_id"]
        done = got.filter(pl.col("state") == "done")
        assert done.height == 24 and done["request_id"].null_count() == 0


def test_report_csv_is_safe_to_open_in_excel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_ids(tmp_path / "=HYPERLINK(1).csv", ids(3))
    rig = Rig(tmp_path)
    summary = rig.run(Path("=HYPERLINK(1).csv"))
    with Path(summary.report or "").open(encoding="utf-8", newline="") as fh:
        cells = [row["source_file"] for row in csv.DictReader(fh)]
    assert cells == ["'=HYPERLINK(1).csv"] * 3


def test_an_unknown_report_format_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    path = write_ids(tmp_path / "ids.csv", ids(30))
    rig.run(path)
    reads, filters = rig.record.reads, len(rig.record.filters)
    with pytest.raises(ConfigError, match=r"end the name with \.csv, \.parquet, \.json"):
        rig.verify(rig.ledger_for(), out=tmp_path / "r.xlsx")
    with pytest.raises(ConfigError, match=r"end the name with \.csv, \.parquet, \.json"):
        resolve(rig.job(()), ResolveOptions((path,), tmp_path / "table.xlsx"), rig.route)
    assert (rig.record.reads, len(rig.record.filters)) == (reads, filters)
    assert not (tmp_path / "r.xlsx").exists() and not (tmp_path / "table.xlsx").exists()


# -- one writer, many readers ---------------------------------------------------------------------
def test_readers_work_and_a_second_writer_is_refused_while_a_run_writes(tmp_path: Path) -> None:
    rig = Rig(tmp_path, send={"batch_size": 10, "max_in_flight": 1})
    rig.events = Hooked()
    ledger = rig.ledger_for()
    path = write_ids(tmp_path / "ids.csv", ids(200))
    stop = StopSignal()
    seen: dict[str, object] = {}

    def while_live() -> None:
        seen["status"] = status(ledger)
        seen["report"] = report_frame(ledger)

        def second() -> None:
            for name, attempt in (("run", lambda: rig.run(path)), ("undo", rig_undo)):
                try:
                    attempt()
                except LedgerError as exc:
                    seen[name] = str(exc)

        worker = threading.Thread(target=second)
        worker.start()
        worker.join()
        stop.ask()

    def rig_undo() -> None:
        rig.undo(ledger)

    rig.events.at("request", 3, while_live)
    summary = rig.run(path, stop=stop)
    live, report = seen["status"], seen["report"]
    assert isinstance(live, Status) and isinstance(report, pl.DataFrame)
    assert live.live and live.counts["confirm"]["done"] >= 20
    assert live.counts["confirm"]["planned"] > 0 and report.height == 200
    for name in ("run", "undo"):
        assert "another batcher is writing this ledger" in str(seen[name]), name
        assert f"pid {os.getpid()}" in str(seen[name]), name
    assert summary.interrupted and rig.record.accepted["dismiss"] == []
    after = status(ledger)
    assert not after.live and not after.killed


def test_a_foreign_file_given_as_ledger_is_refused_and_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (x TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
    before = foreign.read_bytes()
    rig = Rig(tmp_path)
    with pytest.raises(LedgerError, match="not a batcher ledger"):
        rig.run(write_ids(tmp_path / "ids.csv", ids(5)), ledger=foreign)
    assert foreign.read_bytes() == before
    assert rig.record.requests == 0


def test_a_read_only_ledger_is_a_clear_error_and_sends_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    values = ids(20)
    rig.run(write_ids(tmp_path / "first.csv", values[:10]))
    before = rig.record.requests
    ledger = rig.ledger_for()
    subprocess.run(["chattr", "+i", str(ledger)], check=True)  # even root cannot write it
    try:
        with pytest.raises(LedgerError, match="read-only"):
            rig.run(write_ids(tmp_path / "all.csv", values))
    finally:
        subprocess.run(["chattr", "-i", str(ledger)], check=True)
    assert rig.record.requests == before
    assert counts(ledger) == {"confirm": {"done": 10}}


def test_an_old_v1_ledger_is_migrated_and_resumes(tmp_path: Path) -> None:
    ledger = tmp_path / "old.sqlite"
    values = ids(12)
    with sqlite3.connect(ledger) as db:  # a version-1 ledger, as the first release wrote it
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.executescript(MIGRATIONS[1])
        db.execute("PRAGMA user_version = 1")
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("action", CONFIRM),
                ("tenant", SIMULATED_TENANT),
                ("cloud", "global"),
                ("api_version", "v1.0"),
            ],
        )
        db.executemany(
            "INSERT INTO ids (user_id, state) VALUES (?, ?)",
            [(i, "confirmed") for i in values[:4]] + [(i, "sending") for i in values[4:6]],
        )
    os.chmod(ledger, 0o600)
    rig = Rig(tmp_path)
    summary = rig.run(write_ids(tmp_path / "ids.csv", values), ledger=ledger)
    assert summary.actions[0].already_done == 4
    assert sorted(rig.record.accepted[CONFIRM]) == sorted(values[4:])
    assert set(states(ledger).values()) == {"done"}
    with sqlite3.connect(ledger) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == max(MIGRATIONS)
    run = runs_of(ledger)[-1]
    assert run["command"] == "run" and run["os_user"] and run["host"]
    inputs = json.loads(str(run["inputs"]))
    assert len(inputs[0]["sha256"]) == 64 and len(str(run["config_digest"])) == 64


# -- where ledgers live, and what other recent runs did -------------------------------------------
def _default(rig: Rig, *inputs: Path) -> Path:
    return default_path(rig.settings, inputs, rig.job().scope)


def test_the_default_ledger_is_absolute_under_the_ledger_dir_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(tmp_path)
    (tmp_path / "case").mkdir()
    path = write_ids(tmp_path / "case" / "ids.csv", ids(3))
    ledger = _default(rig, path)
    assert ledger.is_absolute() and ledger.parent == tmp_path / "ledgers"
    assert ledger.name.startswith(f"ids-confirm-{SIMULATED_TENANT[:8]}-")
    monkeypatch.chdir(tmp_path / "case")
    assert _default(rig, Path("ids.csv")) == ledger  # the same file, named from its folder
    monkeypatch.chdir(tmp_path)
    assert _default(rig, Path("case/ids.csv")) == ledger
    contain = default_path(
        rig.settings, [path], rig.job(("disable", "revoke-sessions", "confirm")).scope
    )
    assert contain.name.startswith("ids-contain-") and contain.parent == ledger.parent


def _two_names(tmp_path: Path, n: int = 20) -> tuple[Path, Path]:
    """The same list, saved twice: once, then again from another folder under another name."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    values = ids(n)
    return write_ids(tmp_path / "a" / "ids.csv", values), write_ids(
        tmp_path / "b" / "ids (1).csv", values
    )


def test_the_same_list_under_another_name_is_a_second_ledger_that_sends_nothing_again(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    first, second = _two_names(tmp_path)
    one, two = _default(rig, first), _default(rig, second)
    assert one != two and one.parent == two.parent
    rig.run(first, ledger=one)
    planned = rig.run(second, ledger=two, dry_run=True)
    assert planned.actions[0].done_elsewhere == 20 and planned.to_send == 0
    again = rig.run(second, ledger=two)
    assert again.actions[0].done_elsewhere == 20 and again.to_send == 0
    assert len(rig.record.accepted[CONFIRM]) == 20  # nothing re-sent
    note = [n for n in again.notes if "already done" in n]
    assert note and str(one) in note[0] and "--resend" in note[0]
    assert "another run on this tenant" in note[0]


def test_a_ledger_named_elsewhere_still_sees_the_recent_runs_in_the_ledger_dir(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    first, second = _two_names(tmp_path)
    rig.run(first, ledger=_default(rig, first))
    again = rig.run(second, ledger=tmp_path / "b" / "mine.sqlite")  # --ledger outside the dir
    assert again.actions[0].done_elsewhere == 20 and again.to_send == 0
    assert len(rig.record.accepted[CONFIRM]) == 20


def test_resend_sends_what_another_recent_run_already_did(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    first, second = _two_names(tmp_path)
    rig.run(first, ledger=_default(rig, first))
    again = rig.run(second, ledger=_default(rig, second), resend=True)
    assert again.actions[0].done == 20 and again.actions[0].done_elsewhere == 0
    assert len(rig.record.accepted[CONFIRM]) == 40


def test_an_undo_in_between_makes_them_sendable_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    first, second = _two_names(tmp_path)
    one = _default(rig, first)
    rig.run(first, ledger=one)
    assert rig.undo(one).actions[0].done == 20
    again = rig.run(second, ledger=_default(rig, second))
    assert again.actions[0].done == 20 and again.actions[0].done_elsewhere == 0


def test_recent_hours_zero_turns_the_check_off(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ledger={"recent_hours": 0.0})
    first, second = _two_names(tmp_path)
    rig.run(first, ledger=_default(rig, first))
    again = rig.run(second, ledger=_default(rig, second))
    assert again.actions[0].done == 20 and again.actions[0].done_elsewhere == 0
    assert not any("already done" in n for n in again.notes)
