"""The SQLite ledger on real files: who may open it, and how each ID's state moves."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batcher.errors import LedgerError
from batcher.ledger import APPLICATION_ID, SCHEMA_VERSION, Answer, Ledger, RunIdentity, State

IDENTITY = RunIdentity(
    action="confirmCompromised", tenant="tenant-a", cloud="global", api_version="v1.0"
)
IDS = [f"{n:08d}-0000-4000-8000-000000000000" for n in range(1, 8)]
ZERO = {state.value: 0 for state in State}


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "ledger.sqlite"


@pytest.fixture
def ledger(ledger_path: Path) -> Iterator[Ledger]:
    book = Ledger.open(ledger_path, IDENTITY)
    yield book
    book.close()


def frame(ids: list[str], source: str = "users.csv") -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": ids, "source_file": [source] * len(ids), "source_row": range(2, len(ids) + 2)},
        schema={"user_id": pl.String, "source_file": pl.String, "source_row": pl.Int64},
    )


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the file with a separate, read-only connection: what is on disk, not in memory."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def id_row(path: Path, user_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM ids WHERE user_id = ?", (user_id,)).fetchone()
    finally:
        conn.close()
    assert row is not None, user_id
    return dict(row)


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# -- creating and opening ------------------------------------------------------------------------
def test_a_new_ledger_is_created_with_its_identity(ledger: Ledger, ledger_path: Path) -> None:
    assert ledger_path.is_file()  # the missing runs/ directory was made too
    meta = ledger.meta()
    assert meta["action"] == "confirmCompromised"
    assert meta["tenant"] == "tenant-a"
    assert meta["cloud"] == "global"
    assert meta["api_version"] == "v1.0"
    assert meta["created_at"]
    assert ledger.counts() == ZERO
    assert rows(ledger_path, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert rows(ledger_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(ledger_path, "PRAGMA journal_mode") == [("wal",)]  # readers never wait


def test_the_ledger_file_is_private_to_its_owner(ledger: Ledger, ledger_path: Path) -> None:
    assert stat.S_IMODE(ledger_path.stat().st_mode) == 0o600


def test_reopening_keeps_what_was_written(ledger_path: Path) -> None:
    first = Ledger.open(ledger_path, IDENTITY)
    first.add_ids(frame(IDS[:3]))
    first.close()

    again = Ledger.open(ledger_path, IDENTITY)
    try:
        assert again.counts() == {**ZERO, "planned": 3}
        assert again.meta()["tenant"] == "tenant-a"
    finally:
        again.close()

    existing = Ledger.open_existing(ledger_path, IDENTITY)
    try:
        assert existing.counts() == {**ZERO, "planned": 3}
    finally:
        existing.close()


def test_open_existing_refuses_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.sqlite"
    with pytest.raises(LedgerError, match="no such ledger"):
        Ledger.open_existing(path, IDENTITY)
    assert not path.exists()


@pytest.mark.parametrize(
    ("field", "other"),
    [("action", "dismiss"), ("tenant", "tenant-b")],
)
def test_a_ledger_for_another_run_is_refused(ledger_path: Path, field: str, other: str) -> None:
    Ledger.open(ledger_path, IDENTITY).close()
    before = ledger_path.read_bytes()
    mismatched = dataclasses.replace(IDENTITY, **{field: other})

    with pytest.raises(LedgerError, match=field) as raised:
        Ledger.open(ledger_path, mismatched)
    assert repr(other) in str(raised.value)
    with pytest.raises(LedgerError, match=field):
        Ledger.open_existing(ledger_path, mismatched)

    assert ledger_path.read_bytes() == before
    Ledger.open(ledger_path, IDENTITY).close()  # still good for the run it belongs to


def test_open_existing_without_identity_reads_any_batcher_ledger(ledger_path: Path) -> None:
    Ledger.open(ledger_path, IDENTITY).close()
    book = Ledger.open_existing(ledger_path)
    try:
        assert book.meta()["action"] == "confirmCompromised"
    finally:
        book.close()


def test_random_bytes_are_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "photo.sqlite"
    content = os.urandom(8192)
    path.write_bytes(content)

    with pytest.raises(LedgerError, match="not a batcher ledger"):
        Ledger.open(path, IDENTITY)
    with pytest.raises(LedgerError, match="not a batcher ledger"):
        Ledger.open_existing(path, IDENTITY)

    assert path.read_bytes() == content
    assert files_in(tmp_path) == {"photo.sqlite"}


@pytest.mark.parametrize("opener", ["open", "open_existing"])
def test_another_sqlite_database_is_refused_and_left_byte_for_byte_untouched(
    tmp_path: Path, opener: str
) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('Ada'), ('Grace')")
    conn.commit()
    conn.close()
    content = path.read_bytes()

    with pytest.raises(LedgerError, match="not a batcher ledger"):
        getattr(Ledger, opener)(path, IDENTITY)

    assert path.read_bytes() == content
    assert files_in(tmp_path) == {"app.db"}
    assert rows(path, "PRAGMA journal_mode") == [("delete",)]


def test_a_ledger_from_a_newer_batcher_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.commit()
    conn.close()
    content = path.read_bytes()

    with pytest.raises(LedgerError, match="newer batcher"):
        Ledger.open(path, IDENTITY)
    assert path.read_bytes() == content


def test_an_empty_file_becomes_a_new_ledger(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    book = Ledger.open(path, IDENTITY)
    try:
        assert book.meta()["action"] == "confirmCompromised"
    finally:
        book.close()


# -- state ---------------------------------------------------------------------------------------
def test_add_ids_records_them_as_planned_once(ledger: Ledger, ledger_path: Path) -> None:
    ledger.add_ids(frame(IDS[:4]))
    ledger.add_ids(frame(IDS[2:6], source="more.csv"))  # two of these are already known
    ledger.add_ids(frame([]))
    assert ledger.counts() == {**ZERO, "planned": 6}
    assert id_row(ledger_path, IDS[2])["source_file"] == "users.csv"  # first sighting kept
    assert id_row(ledger_path, IDS[2])["source_row"] == 4
    assert id_row(ledger_path, IDS[5])["source_file"] == "more.csv"
    known = ledger.known_states().sort("user_id")
    assert known["user_id"].to_list() == IDS[:6]
    assert known["state"].to_list() == ["planned"] * 6


def test_a_batch_moves_from_planned_through_sending_to_confirmed(
    ledger: Ledger, ledger_path: Path
) -> None:
    ledger.add_ids(frame(IDS[:5]))
    batch, rest = IDS[:3], IDS[3:5]

    batch_id = ledger.start_batch(batch)
    assert ledger.counts() == {**ZERO, "planned": 2, "sending": 3}
    assert id_row(ledger_path, batch[0])["batch_id"] == batch_id
    assert id_row(ledger_path, batch[0])["attempts"] == 0

    # First try: throttled. The IDs stay "sending"; the attempt is on record.
    first = ledger.start_attempt(batch_id, "crid-1")
    assert id_row(ledger_path, batch[0])["attempts"] == 1
    assert rows(ledger_path, "SELECT finished_at FROM attempts WHERE attempt_id = ?", first) == [
        (None,)
    ]
    ledger.finish_attempt(
        first, batch_id, Answer("throttled", http_status=429, error_code="TooManyRequests")
    )
    assert ledger.counts() == {**ZERO, "planned": 2, "sending": 3}
    row = id_row(ledger_path, batch[1])
    assert (row["state"], row["last_status"], row["error_code"]) == (
        "sending",
        429,
        "TooManyRequests",
    )
    sent_at = row["sent_at"]
    assert sent_at is not None
    assert row["finished_at"] is None

    # Second try: accepted, which settles the batch.
    second = ledger.start_attempt(batch_id, "crid-2")
    ledger.finish_attempt(
        second,
        batch_id,
        Answer("accepted", http_status=204, request_id="rid-2"),
        settle=State.CONFIRMED,
    )
    assert ledger.counts() == {**ZERO, "planned": 2, "confirmed": 3}
    for user_id in batch:
        row = id_row(ledger_path, user_id)
        assert row["state"] == "confirmed"
        assert row["attempts"] == 2
        assert row["last_status"] == 204
        assert row["error_code"] is None
        assert row["request_id"] == "rid-2"
        assert row["client_request_id"] == "crid-2"
        assert row["sent_at"] == sent_at  # the first send, not the last
        assert row["finished_at"] is not None
    for user_id in rest:
        assert id_row(ledger_path, user_id)["attempts"] == 0
    assert rows(ledger_path, "SELECT state, size FROM batches WHERE batch_id = ?", batch_id) == [
        ("confirmed", 3)
    ]
    attempts = rows(
        ledger_path,
        "SELECT client_request_id, http_status, outcome FROM attempts "
        "WHERE batch_id = ? ORDER BY attempt_id",
        batch_id,
    )
    assert attempts == [("crid-1", 429, "throttled"), ("crid-2", 204, "accepted")]


@pytest.mark.parametrize("final", [State.FAILED, State.UNKNOWN])
def test_settle_batch_gives_the_final_state(
    ledger: Ledger, ledger_path: Path, final: State
) -> None:
    ledger.add_ids(frame(IDS[:4]))
    batch_id = ledger.start_batch(IDS[:2])
    attempt = ledger.start_attempt(batch_id, "crid")
    answer = Answer("server_error", http_status=503, error_code="serviceNotAvailable")
    ledger.finish_attempt(attempt, batch_id, answer)
    ledger.settle_batch(batch_id, final, answer)

    assert ledger.counts() == {**ZERO, "planned": 2, final.value: 2}
    row = id_row(ledger_path, IDS[0])
    assert row["state"] == final.value
    assert row["last_status"] == 503
    assert row["error_code"] == "serviceNotAvailable"
    assert row["finished_at"] is not None
    assert rows(ledger_path, "SELECT state FROM batches WHERE batch_id = ?", batch_id) == [
        (final.value,)
    ]


def test_batches_are_kept_apart(ledger: Ledger, ledger_path: Path) -> None:
    ledger.add_ids(frame(IDS))
    confirmed = ledger.start_batch(IDS[0:2])
    failed = ledger.start_batch(IDS[2:4])
    unknown = ledger.start_batch(IDS[4:6])
    assert len({confirmed, failed, unknown}) == 3

    for batch_id in (confirmed, failed, unknown):
        ledger.start_attempt(batch_id, f"crid-{batch_id}")
    ledger.start_attempt(unknown, "crid-again")

    ledger.finish_attempt(
        ledger.start_attempt(confirmed, "crid-ok"),
        confirmed,
        Answer("accepted", http_status=204),
        settle=State.CONFIRMED,
    )
    ledger.settle_batch(failed, State.FAILED, Answer("bad_request", http_status=400))
    ledger.settle_batch(unknown, State.UNKNOWN, Answer("no_answer"))

    assert ledger.counts() == {
        "planned": 1,
        "sending": 0,
        "confirmed": 2,
        "failed": 2,
        "unknown": 2,
    }
    assert [id_row(ledger_path, i)["attempts"] for i in IDS] == [2, 2, 1, 1, 2, 2, 0]
    assert id_row(ledger_path, IDS[2])["last_status"] == 400
    assert id_row(ledger_path, IDS[4])["client_request_id"] == "crid-again"


def test_a_second_connection_reads_counts_while_the_first_is_open(ledger_path: Path) -> None:
    writer = Ledger.open(ledger_path, IDENTITY)
    try:
        writer.add_ids(frame(IDS[:4]))
        reader = Ledger.open_existing(ledger_path, IDENTITY)
        try:
            assert reader.counts() == {**ZERO, "planned": 4}
            batch_id = writer.start_batch(IDS[:2])
            assert reader.counts() == {**ZERO, "planned": 2, "sending": 2}
            writer.settle_batch(batch_id, State.CONFIRMED, Answer("accepted", http_status=204))
            assert reader.counts() == {**ZERO, "planned": 2, "confirmed": 2}
        finally:
            reader.close()
        assert writer.counts() == {**ZERO, "planned": 2, "confirmed": 2}
    finally:
        writer.close()


def test_readers_are_not_blocked_by_an_open_write_transaction(ledger_path: Path) -> None:
    writer = Ledger.open(ledger_path, IDENTITY)
    writer.add_ids(frame(IDS[:3]))
    other = sqlite3.connect(ledger_path, isolation_level=None)
    reader = Ledger.open_existing(ledger_path, IDENTITY)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
        other.execute("UPDATE ids SET state = 'confirmed'")
        assert reader.counts() == {**ZERO, "planned": 3}  # sees the last commit, at once
        other.execute("COMMIT")
        assert reader.counts() == {**ZERO, "confirmed": 3}
    finally:
        reader.close()
        other.close()
        writer.close()


# -- one writer, run records, replay, export ------------------------------------------------------
def test_a_second_writer_is_refused_until_the_first_closes(ledger_path: Path) -> None:
    first = Ledger.open(ledger_path, IDENTITY)
    with pytest.raises(LedgerError, match=rf"another batcher is writing .*pid {os.getpid()}"):
        Ledger.open(ledger_path, IDENTITY)
    reader = Ledger.open_existing(ledger_path, IDENTITY)  # readers are never refused
    assert reader.counts() == ZERO
    reader.close()
    first.close()
    Ledger.open(ledger_path, IDENTITY).close()


def test_each_run_is_recorded_with_who_where_and_what(ledger: Ledger, ledger_path: Path) -> None:
    from batcher.ledger import RunRecord

    run_id = ledger.begin_run(RunRecord("run", "d" * 64, (("ids.csv", "a" * 64),)))
    ledger.add_ids(frame(IDS[:2]))
    batch = ledger.start_batch(IDS[:2])
    ledger.start_attempt(batch, "crid")
    ledger.end_run({"confirmed": 0})
    [run] = ledger.runs()
    assert run["run_id"] == run_id
    assert run["command"] == "run"
    assert run["os_user"] and run["host"]
    assert run["inputs"] == '[{"path": "ids.csv", "sha256": "' + "a" * 64 + '"}]'
    assert run["config_digest"] == "d" * 64
    assert run["started_at"] and run["finished_at"]
    assert rows(ledger_path, "SELECT run_id FROM attempts") == [(run_id,)]


def test_replay_candidates_are_failed_unknown_and_stale_sending(ledger: Ledger) -> None:
    ledger.add_ids(frame(IDS))
    for ids, state, code in [
        (IDS[0:2], State.FAILED, "invalidRequest"),
        (IDS[2:3], State.UNKNOWN, "serviceNotAvailable"),
        (IDS[3:4], State.CONFIRMED, None),
    ]:
        batch = ledger.start_batch(ids)
        ledger.settle_batch(batch, state, Answer("x", error_code=code))
    ledger.start_batch(IDS[4:5])  # left "sending" by a crash
    assert ledger.replay_candidates() == [*IDS[0:3], IDS[4]]
    assert ledger.replay_candidates("INVALIDREQUEST") == IDS[0:2]  # codes match in any case
    assert ledger.error_codes() == {"invalidRequest": 2, "serviceNotAvailable": 1}


def test_export_has_one_typed_row_per_id(ledger: Ledger) -> None:
    from batcher.ledger import REPORT_COLUMNS

    ledger.add_ids(frame(IDS[:3]))
    batch = ledger.start_batch(IDS[:2])
    attempt = ledger.start_attempt(batch, "crid-9")
    ledger.finish_attempt(
        attempt, batch, Answer("accepted", http_status=204, request_id="rid-9"), State.CONFIRMED
    )
    report = ledger.export()
    assert tuple(report.columns) == REPORT_COLUMNS
    assert report.schema["attempts"] == pl.Int64
    assert report.rows_by_key("user_id", named=True, unique=True)[IDS[0]] == {
        "status": "confirmed",
        "attempts": 1,
        "last_http_status": 204,
        "error_code": None,
        "error_message": None,
        "request_id": "rid-9",
        "client_request_id": "crid-9",
        "source_file": "users.csv",
        "source_row": 2,
        "sent_at": report["sent_at"][0],
        "finished_at": report["finished_at"][0],
    }
    assert report["status"].to_list() == ["confirmed", "confirmed", "planned"]
