"""The SQLite ledger on real files: who may open it, how each step's state moves, what it tells."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batcher.errors import LedgerError
from batcher.ledger import (
    APPLICATION_ID,
    LOOKUP_COLUMNS,
    MEANING,
    MIGRATIONS,
    REPLAYABLE,
    REPORT_COLUMNS,
    SCHEMA_VERSION,
    TO_SEND,
    UNDOABLE,
    Answer,
    IllegalTransition,
    Ledger,
    Outcome,
    RunRecord,
    RunScope,
    StepResult,
    StepState,
    WriterLock,
    now,
)
from batcher.ledger.schema import statements
from batcher.plan import USER_COLUMNS
from tests.helpers import ids

CONFIRM = RunScope(actions=("confirm",), tenant="tenant-a", cloud="global", api_version="v1.0")
DIRECTORY = dataclasses.replace(CONFIRM, actions=("disable", "revoke-sessions"))
IDS = ids(8)
ZERO = {state.value: 0 for state in StepState}

ACCEPTED = Answer(Outcome.ACCEPTED, http_status=204, request_id="rid-ok")
THROTTLED = Answer(Outcome.THROTTLED, http_status=429, error_code="TooManyRequests")
UNAVAILABLE = Answer(Outcome.SERVER_ERROR, http_status=503, error_code="serviceNotAvailable")
LOST = Answer(Outcome.NO_ANSWER, error_message="no answer in time")
NOT_CONNECTED = Answer(Outcome.NOT_CONNECTED, error_message="the connection was refused")
REFUSED = Answer(Outcome.BAD_REQUEST, http_status=400, error_code="invalidRequest")
NOT_FOUND = Answer(Outcome.NOT_FOUND, http_status=404, error_code="Request_ResourceNotFound")


# -- helpers -------------------------------------------------------------------------------------
@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "ledger.sqlite"


@pytest.fixture
def ledger(ledger_path: Path) -> Iterator[Ledger]:
    book = Ledger.open(ledger_path, CONFIRM)
    yield book
    book.close()


def users(
    user_ids: Sequence[str], source: str = "users.csv", **columns: Sequence[Any]
) -> pl.DataFrame:
    data: dict[str, Any] = {
        "user_id": list(user_ids),
        "source_file": [source] * len(user_ids),
        "source_row": list(range(2, len(user_ids) + 2)),
        "input_value": list(user_ids),
        "matched_by": ["object_id"] * len(user_ids),
        "user_type": ["Member"] * len(user_ids),
        "account_enabled": [True] * len(user_ids),
    }
    data.update({k: list(v) for k, v in columns.items()})
    return pl.DataFrame(data, schema=USER_COLUMNS)


def plan(book: Ledger, user_ids: Sequence[str], *actions: str) -> None:
    book.add_users(users(user_ids))
    for action in actions or ("confirm",):
        book.add_steps(action, pl.Series(list(user_ids), dtype=pl.String))


def keys(user_ids: Sequence[str], action: str = "confirm") -> list[tuple[str, str]]:
    return [(uid, action) for uid in user_ids]


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the file with a separate, read-only connection: what is on disk, not in memory."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def step(path: Path, user_id: str, action: str = "confirm") -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute(
            "SELECT * FROM steps WHERE user_id = ? AND action = ?", (user_id, action)
        ).fetchone()
    finally:
        conn.close()
    assert row is not None, (user_id, action)
    return dict(row)


def known(book: Ledger, action: str = "confirm") -> dict[str, str]:
    frame = book.known_steps().filter(pl.col("action") == action)
    return dict(zip(frame["user_id"], frame["state"], strict=True))


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def read_only(path: Path) -> Ledger:
    return Ledger.open_existing(path)


# -- creating and opening ------------------------------------------------------------------------
def test_a_new_ledger_is_created_with_its_identity(ledger: Ledger, ledger_path: Path) -> None:
    assert ledger_path.is_file()  # the missing runs/ directory was made too
    meta = ledger.meta()
    assert meta["actions"] == "confirm"
    assert meta["tenant"] == "tenant-a"
    assert meta["cloud"] == "global"
    assert meta["api_version"] == "v1.0"
    assert meta["created_at"] and meta["tool_version"]
    assert ledger.actions() == ("confirm",)
    assert ledger.counts() == {"confirm": ZERO}
    assert ledger.live
    assert rows(ledger_path, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert rows(ledger_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 8  # 7 is another branch's (see schema.py)
    assert rows(ledger_path, "PRAGMA journal_mode") == [("wal",)]  # readers never wait


def test_a_ledger_for_several_actions_counts_each(ledger_path: Path) -> None:
    book = Ledger.open(ledger_path, DIRECTORY)
    try:
        assert book.meta()["actions"] == "disable,revoke-sessions"
        assert book.counts() == {"disable": ZERO, "revoke-sessions": ZERO}
    finally:
        book.close()


def test_the_ledger_file_is_private_to_its_owner(ledger: Ledger, ledger_path: Path) -> None:
    plan(ledger, IDS[:2])  # something written: the write-ahead log is there too
    written = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ledger_path.parent.iterdir()}
    assert {"ledger.sqlite", "ledger.sqlite.lock", "ledger.sqlite-wal"} <= set(written)
    assert set(written.values()) == {0o600}


def test_an_empty_file_already_there_is_made_private_too(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    Ledger.open(path, CONFIRM).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reopening_keeps_what_was_written(ledger_path: Path) -> None:
    first = Ledger.open(ledger_path, CONFIRM)
    plan(first, IDS[:3])
    first.close()

    again = Ledger.open(ledger_path, CONFIRM)
    try:
        assert again.counts() == {"confirm": {**ZERO, "planned": 3}}
        assert again.meta()["tenant"] == "tenant-a"
    finally:
        again.close()

    existing = Ledger.open_existing(ledger_path, CONFIRM)
    try:
        assert existing.counts() == {"confirm": {**ZERO, "planned": 3}}
        assert not existing.live
    finally:
        existing.close()


def test_open_existing_refuses_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.sqlite"
    with pytest.raises(LedgerError, match="no such ledger"):
        Ledger.open_existing(path, CONFIRM)
    assert not path.exists()


def test_a_new_ledger_needs_an_identity(tmp_path: Path) -> None:
    path = tmp_path / "nope.sqlite"
    with pytest.raises(LedgerError, match="no such ledger"):
        Ledger.open(path)
    assert not path.exists()


def test_a_directory_is_refused_with_a_file_path_to_use(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match=r"is a directory.*incident\.sqlite"):
        Ledger.open(tmp_path, CONFIRM)
    assert files_in(tmp_path) == set()


@pytest.mark.parametrize(
    ("change", "shown", "wanted"),
    [
        ({"actions": ("dismiss",)}, "'confirm'", "'dismiss'"),
        ({"actions": ("confirm", "disable")}, "'confirm'", "'confirm,disable'"),
        ({"tenant": "tenant-b"}, "'tenant-a'", "'tenant-b'"),
    ],
    ids=["other-action", "more-actions", "other-tenant"],
)
def test_a_ledger_for_another_run_is_refused_with_a_clear_line(
    ledger_path: Path, change: dict[str, Any], shown: str, wanted: str
) -> None:
    Ledger.open(ledger_path, CONFIRM).close()
    before = ledger_path.read_bytes()
    mismatched = dataclasses.replace(CONFIRM, **change)

    for opener in (Ledger.open, Ledger.open_existing):
        with pytest.raises(LedgerError) as raised:
            opener(ledger_path, mismatched)
        message = str(raised.value)
        assert "\n" not in message
        assert shown in message and wanted in message
        assert "--ledger" in message  # what to do about it

    assert ledger_path.read_bytes() == before
    assert not ledger_path.with_name(ledger_path.name + ".lock").exists()
    Ledger.open(ledger_path, CONFIRM).close()  # still good for the run it belongs to


def test_open_existing_without_identity_reads_any_batcher_ledger(ledger_path: Path) -> None:
    Ledger.open(ledger_path, CONFIRM).close()
    book = Ledger.open_existing(ledger_path)
    try:
        assert book.actions() == ("confirm",)
    finally:
        book.close()


def test_random_bytes_are_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "photo.sqlite"
    content = os.urandom(8192)
    path.write_bytes(content)

    with pytest.raises(LedgerError, match="not a batcher ledger"):
        Ledger.open(path, CONFIRM)
    with pytest.raises(LedgerError, match="not a batcher ledger"):
        Ledger.open_existing(path, CONFIRM)

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

    with pytest.raises(LedgerError, match="not a batcher ledger") as raised:
        getattr(Ledger, opener)(path, CONFIRM)
    assert "left untouched" in str(raised.value)

    assert path.read_bytes() == content
    assert files_in(tmp_path) == {"app.db"}
    assert rows(path, "PRAGMA journal_mode") == [("delete",)]


def test_a_ledger_from_a_newer_batcher_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.commit()
    conn.close()
    content = path.read_bytes()

    for opener in (Ledger.open, Ledger.open_existing):
        with pytest.raises(LedgerError, match=rf"newer batcher \(schema {SCHEMA_VERSION + 1}\)"):
            opener(path, CONFIRM)
    assert path.read_bytes() == content
    assert files_in(tmp_path) == {"future.sqlite"}


def test_an_empty_file_becomes_a_new_ledger(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    book = Ledger.open(path, CONFIRM)
    try:
        assert book.actions() == ("confirm",)
        assert book.schema_version() == SCHEMA_VERSION
    finally:
        book.close()


# -- one writer, many readers --------------------------------------------------------------------
def test_a_second_writer_is_refused_until_the_first_closes(ledger_path: Path) -> None:
    lock = ledger_path.with_name(ledger_path.name + ".lock")
    first = Ledger.open(ledger_path, CONFIRM)
    assert WriterLock.held(ledger_path)
    assert f"pid {os.getpid()}" in lock.read_text()
    with pytest.raises(LedgerError, match=rf"another batcher is writing .*pid {os.getpid()}"):
        Ledger.open(ledger_path, CONFIRM)
    assert lock.exists()  # the refused one did not take the holder's lock file away
    reader = Ledger.open_existing(ledger_path, CONFIRM)  # readers are never refused
    assert reader.counts() == {"confirm": ZERO}
    reader.close()
    first.close()

    assert not lock.exists()  # released: no lock file left behind
    assert not WriterLock.held(ledger_path)
    Ledger.open(ledger_path, CONFIRM).close()
    assert not lock.exists()


def test_a_second_connection_reads_counts_while_the_first_is_open(ledger_path: Path) -> None:
    writer = Ledger.open(ledger_path, CONFIRM)
    try:
        plan(writer, IDS[:4])
        reader = Ledger.open_existing(ledger_path, CONFIRM)
        try:
            assert reader.counts() == {"confirm": {**ZERO, "planned": 4}}
            batch, attempt = writer.start_batch("confirm", keys(IDS[:2]), "crid")
            assert reader.counts(live=True) == {"confirm": {**ZERO, "planned": 2, "sending": 2}}
            writer.finish_attempt(batch, attempt, ACCEPTED, StepState.DONE)
            assert reader.counts() == {"confirm": {**ZERO, "planned": 2, "done": 2}}
        finally:
            reader.close()
        assert writer.counts() == {"confirm": {**ZERO, "planned": 2, "done": 2}}
    finally:
        writer.close()


def test_readers_are_not_blocked_by_an_open_write_transaction(ledger_path: Path) -> None:
    writer = Ledger.open(ledger_path, CONFIRM)
    plan(writer, IDS[:3])
    other = sqlite3.connect(ledger_path, isolation_level=None)
    reader = Ledger.open_existing(ledger_path, CONFIRM)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
        other.execute("UPDATE steps SET state = 'done'")
        assert reader.counts() == {"confirm": {**ZERO, "planned": 3}}  # the last commit, at once
        assert set(known(reader).values()) == {"planned"}
        other.execute("COMMIT")
        assert reader.counts() == {"confirm": {**ZERO, "done": 3}}
    finally:
        reader.close()
        other.close()
        writer.close()


# -- users, steps and look-ups -------------------------------------------------------------------
def test_users_and_steps_are_recorded_once(ledger: Ledger, ledger_path: Path) -> None:
    plan(ledger, IDS[:4])
    ledger.add_users(users(IDS[2:6], source="more.csv"))  # two of these are already known
    ledger.add_steps("confirm", pl.Series(IDS[2:6]))
    ledger.add_users(users([]))
    ledger.add_steps("confirm", pl.Series([], dtype=pl.String))
    assert ledger.users() == 6
    assert ledger.counts() == {"confirm": {**ZERO, "planned": 6}}
    first = rows(ledger_path, "SELECT source_file, source_row FROM users WHERE user_id = ?", IDS[2])
    assert first == [("users.csv", 4)]  # the first sighting is kept
    later = rows(ledger_path, "SELECT source_file FROM users WHERE user_id = ?", IDS[5])
    assert later == [("more.csv",)]
    steps = ledger.known_steps().sort("user_id")
    assert sorted(steps["user_id"]) == sorted(IDS[:6])
    assert set(steps["action"]) == {"confirm"}
    assert set(steps["state"]) == {"planned"}


def test_a_users_frame_may_leave_columns_out(ledger: Ledger, ledger_path: Path) -> None:
    ledger.add_users(pl.DataFrame({"user_id": IDS[:1]}))
    assert rows(ledger_path, "SELECT user_id, source_file, account_enabled FROM users") == [
        (IDS[0], None, None)
    ]


def test_a_step_already_planned_keeps_its_state(ledger: Ledger) -> None:
    plan(ledger, IDS[:2])
    batch, attempt = ledger.start_batch("confirm", keys(IDS[:1]), "crid")
    ledger.finish_attempt(batch, attempt, ACCEPTED, StepState.DONE)
    ledger.add_steps("confirm", pl.Series(IDS[:2]))
    assert known(ledger) == {IDS[0]: "done", IDS[1]: "planned"}


def test_skipped_steps_say_why_and_never_undo_a_step_that_went(
    ledger_path: Path,
) -> None:
    book = Ledger.open(ledger_path, DIRECTORY)
    try:
        plan(book, IDS[:3], "disable", "revoke-sessions")
        batch, attempt = book.start_batch(None, keys(IDS[:1], "revoke-sessions"), "crid")
        book.finish_attempt(batch, attempt, ACCEPTED, StepState.DONE)
        book.add_users(users(IDS[3:4], user_type=["Guest"]))
        guests = pl.Series([IDS[0], IDS[1], IDS[3]])
        book.skip_steps("revoke-sessions", guests, "a guest: revoke in the home tenant")
        book.skip_steps("revoke-sessions", pl.Series([], dtype=pl.String), "nothing")
        assert known(book, "revoke-sessions") == {
            IDS[0]: "done",  # it went: a skip does not rewrite history
            IDS[1]: "skipped",
            IDS[2]: "planned",
            IDS[3]: "skipped",  # a step the ledger had not seen yet
        }
        assert set(known(book, "disable").values()) == {"planned"}
    finally:
        book.close()
    skipped = step(ledger_path, IDS[1], "revoke-sessions")
    assert skipped["error_message"] == "a guest: revoke in the home tenant"
    assert skipped["finished_at"] is not None


def lookup_rows(**columns: Sequence[Any]) -> pl.DataFrame:
    return pl.DataFrame({k: list(v) for k, v in columns.items()})


def test_lookups_are_cached_and_replaced(ledger: Ledger) -> None:
    ledger.record_lookups(
        lookup_rows(
            input_value=["alice@contoso.com", "S-1-5-21-1"],
            kind=["upn", "sid"],
            outcome=["not_found", "resolved"],
            user_id=[None, IDS[0]],
            source_file=["users.csv", "users.csv"],
            source_row=[2, 3],
            account_enabled=[None, True],
        )
    )
    ledger.record_lookups(
        lookup_rows(
            input_value=["alice@contoso.com"],
            kind=["upn"],
            outcome=["resolved"],
            user_id=[IDS[1]],
            matched_by=["mail"],
        )
    )
    ledger.record_lookups(lookup_rows(input_value=[], kind=[], outcome=[]))
    found = ledger.lookups()
    assert dict(found.schema) == LOOKUP_COLUMNS
    by_value = found.rows_by_key("input_value", named=True, unique=True)
    assert set(by_value) == {"alice@contoso.com", "S-1-5-21-1"}
    assert by_value["alice@contoso.com"]["outcome"] == "resolved"  # the later look-up wins
    assert by_value["alice@contoso.com"]["user_id"] == IDS[1]
    assert by_value["alice@contoso.com"]["matched_by"] == "mail"
    assert by_value["S-1-5-21-1"]["account_enabled"] is True


# -- an ID list through its states ---------------------------------------------------------------
def test_a_batch_moves_from_planned_through_sending_to_done(
    ledger: Ledger, ledger_path: Path
) -> None:
    plan(ledger, IDS[:5])
    batch, rest = IDS[:3], IDS[3:5]

    # The intent: the batch and its first attempt, committed before the request leaves.
    batch_id, first = ledger.start_batch("confirm", keys(batch), "crid-1")
    assert ledger.counts(live=True) == {"confirm": {**ZERO, "planned": 2, "sending": 3}}
    row = step(ledger_path, batch[0])
    assert (row["state"], row["batch_id"], row["attempts"], row["in_flight"]) == (
        "sending",
        batch_id,
        1,
        1,
    )
    assert row["client_request_id"] == "crid-1"
    sent_at = row["sent_at"]
    assert sent_at is not None
    assert rows(ledger_path, "SELECT finished_at, outcome FROM attempts") == [(None, None)]
    assert rows(ledger_path, "SELECT action, size, state FROM batches") == [
        ("confirm", 3, "sending")
    ]

    # First try: throttled. The steps stay "sending"; the attempt is on record.
    ledger.finish_attempt(batch_id, first, THROTTLED, None)
    row = step(ledger_path, batch[1])
    assert (row["state"], row["in_flight"], row["maybe_applied"]) == ("sending", 0, 0)
    assert (row["last_status"], row["error_code"], row["finished_at"]) == (
        429,
        "TooManyRequests",
        None,
    )

    # Second try: accepted, which settles the batch.
    second = ledger.start_attempt(batch_id, "crid-2")
    assert step(ledger_path, batch[0])["in_flight"] == 1
    ledger.finish_attempt(batch_id, second, ACCEPTED, StepState.DONE)
    assert ledger.counts() == {"confirm": {**ZERO, "planned": 2, "done": 3}}
    for user_id in batch:
        row = step(ledger_path, user_id)
        assert row["state"] == "done"
        assert row["attempts"] == 2
        assert row["in_flight"] == 0
        assert row["maybe_applied"] == 1
        assert row["last_status"] == 204
        assert row["error_code"] is None
        assert row["request_id"] == "rid-ok"
        assert row["client_request_id"] == "crid-2"
        assert row["sent_at"] == sent_at  # the first send, not the last
        assert row["finished_at"] is not None
    for user_id in rest:
        assert step(ledger_path, user_id)["attempts"] == 0
    assert rows(ledger_path, "SELECT state FROM batches WHERE batch_id = ?", batch_id) == [
        ("done",)
    ]
    attempts = rows(
        ledger_path,
        "SELECT client_request_id, http_status, outcome FROM attempts "
        "WHERE batch_id = ? ORDER BY attempt_id",
        batch_id,
    )
    assert attempts == [("crid-1", 429, "throttled"), ("crid-2", 204, "accepted")]


@pytest.mark.parametrize("final", [StepState.FAILED, StepState.UNKNOWN])
def test_settle_batch_gives_the_final_state(
    ledger: Ledger, ledger_path: Path, final: StepState
) -> None:
    plan(ledger, IDS[:4])
    batch_id, attempt = ledger.start_batch("confirm", keys(IDS[:2]), "crid")
    ledger.finish_attempt(batch_id, attempt, UNAVAILABLE, None)
    ledger.settle_batch(batch_id, final, UNAVAILABLE)

    assert ledger.counts() == {"confirm": {**ZERO, "planned": 2, final.value: 2}}
    row = step(ledger_path, IDS[0])
    assert row["state"] == final.value
    assert row["last_status"] == 503
    assert row["error_code"] == "serviceNotAvailable"
    assert row["finished_at"] is not None
    assert rows(ledger_path, "SELECT state FROM batches WHERE batch_id = ?", batch_id) == [
        (final.value,)
    ]


def test_batches_are_kept_apart(ledger: Ledger, ledger_path: Path) -> None:
    plan(ledger, IDS[:7])
    done, _ = ledger.start_batch("confirm", keys(IDS[0:2]), "crid-a")
    failed, _ = ledger.start_batch("confirm", keys(IDS[2:4]), "crid-b")
    unknown, _ = ledger.start_batch("confirm", keys(IDS[4:6]), "crid-c")
    assert len({done, failed, unknown}) == 3
    ledger.start_attempt(unknown, "crid-again")

    ledger.finish_attempt(done, ledger.start_attempt(done, "crid-ok"), ACCEPTED, StepState.DONE)
    ledger.settle_batch(failed, StepState.FAILED, REFUSED)
    ledger.settle_batch(unknown, StepState.UNKNOWN, LOST)

    assert ledger.counts() == {
        "confirm": {**ZERO, "planned": 1, "done": 2, "failed": 2, "unknown": 2}
    }
    assert [step(ledger_path, i)["attempts"] for i in IDS[:7]] == [2, 2, 1, 1, 2, 2, 0]
    assert step(ledger_path, IDS[2])["last_status"] == 400
    assert step(ledger_path, IDS[4])["client_request_id"] == "crid-again"


def test_split_halves_a_refused_batch_into_new_batches(ledger: Ledger, ledger_path: Path) -> None:
    plan(ledger, IDS[:4])
    whole, attempt = ledger.start_batch("confirm", keys(IDS[:4]), "crid-all")
    ledger.finish_attempt(whole, attempt, REFUSED, None)
    ledger.split_batch(whole)
    first, a1 = ledger.start_batch("confirm", keys(IDS[:2]), "crid-first")
    second, a2 = ledger.start_batch("confirm", keys(IDS[2:4]), "crid-second")
    ledger.finish_attempt(first, a1, ACCEPTED, StepState.DONE)
    ledger.finish_attempt(second, a2, REFUSED, None)
    ledger.settle_batch(second, StepState.FAILED, REFUSED)

    assert rows(ledger_path, "SELECT batch_id, size, state FROM batches ORDER BY batch_id") == [
        (whole, 4, "split"),
        (first, 2, "done"),
        (second, 2, "failed"),
    ]
    assert known(ledger) == {IDS[0]: "done", IDS[1]: "done", IDS[2]: "failed", IDS[3]: "failed"}
    assert step(ledger_path, IDS[0])["batch_id"] == first  # the steps moved on
    assert step(ledger_path, IDS[0])["attempts"] == 2


# -- what may have been applied ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("outcome", "maybe"),
    [
        (Outcome.ACCEPTED, True),
        (Outcome.SERVER_ERROR, True),
        (Outcome.NO_ANSWER, True),
        (Outcome.THROTTLED, False),
        (Outcome.NOT_CONNECTED, False),
        (Outcome.BAD_REQUEST, False),
        (Outcome.UNAUTHORIZED, False),
        (Outcome.FORBIDDEN, False),
        (Outcome.NOT_FOUND, False),
        (Outcome.REJECTED, False),
    ],
)
def test_an_answer_says_whether_graph_may_have_applied_it(outcome: Outcome, maybe: bool) -> None:
    assert Answer(outcome).maybe_applied is maybe


@pytest.mark.parametrize(
    ("history", "released"),
    [
        ([THROTTLED], "planned"),
        ([THROTTLED, THROTTLED, NOT_CONNECTED], "planned"),
        ([NOT_CONNECTED], "planned"),
        ([UNAVAILABLE], "unknown"),
        ([LOST], "unknown"),
        ([UNAVAILABLE, THROTTLED], "unknown"),  # once maybe applied, always maybe applied
        ([THROTTLED, LOST, NOT_CONNECTED], "unknown"),
    ],
    ids=[
        "429",
        "429-429-refused",
        "refused",
        "503",
        "lost",
        "503-then-429",
        "429-lost-refused",
    ],
)
def test_release_makes_a_step_unknown_only_when_a_request_may_have_applied_it(
    ledger: Ledger, ledger_path: Path, history: list[Answer], released: str
) -> None:
    plan(ledger, IDS[:3])
    batch_id, attempt = ledger.start_batch("confirm", keys(IDS[:2]), "crid-0")
    for n, answer in enumerate(history):
        if n:
            attempt = ledger.start_attempt(batch_id, f"crid-{n}")
        ledger.finish_attempt(batch_id, attempt, answer, None)

    unknown = ledger.release_batch(batch_id)

    assert unknown == (2 if released == "unknown" else 0)
    assert known(ledger) == {IDS[0]: released, IDS[1]: released, IDS[2]: "planned"}
    assert step(ledger_path, IDS[0])["in_flight"] == 0
    batch_state = "unknown" if released == "unknown" else "released"
    assert rows(ledger_path, "SELECT state FROM batches WHERE batch_id = ?", batch_id) == [
        (batch_state,)
    ]


def test_release_leaves_settled_steps_alone(ledger: Ledger) -> None:
    plan(ledger, IDS[:2])
    batch_id, attempt = ledger.start_batch("confirm", keys(IDS[:2]), "crid")
    ledger.finish_attempt(batch_id, attempt, ACCEPTED, StepState.DONE)
    assert ledger.release_batch(batch_id) == 0
    assert set(known(ledger).values()) == {"done"}


# -- what a kill leaves --------------------------------------------------------------------------
def test_a_kill_with_a_request_in_flight_leaves_unknown(ledger_path: Path) -> None:
    writer = Ledger.open(ledger_path, CONFIRM)
    plan(writer, IDS[:3])
    writer.start_batch("confirm", keys(IDS[:2]), "crid")
    writer.close()  # killed while the request was out: no answer was recorded

    reader = read_only(ledger_path)
    try:
        assert known(reader) == {IDS[0]: "unknown", IDS[1]: "unknown", IDS[2]: "planned"}
        assert reader.counts() == {"confirm": {**ZERO, "planned": 1, "unknown": 2}}
        assert reader.counts(live=True) == {"confirm": {**ZERO, "planned": 1, "sending": 2}}
        assert reader.report()["state"].to_list() == ["unknown", "unknown", "planned"]
    finally:
        reader.close()

    resumed = Ledger.open(ledger_path, CONFIRM)
    try:
        assert resumed.recover() == {"confirm": 2}
        assert resumed.counts(live=True) == {"confirm": {**ZERO, "planned": 1, "unknown": 2}}
        assert resumed.batch_states() == {"unknown": 1}
        assert resumed.recover() == {}  # nothing left to recover
    finally:
        resumed.close()
    assert step(ledger_path, IDS[0])["in_flight"] == 0
    assert step(ledger_path, IDS[0])["maybe_applied"] == 1


def test_a_kill_between_throttled_tries_leaves_planned(ledger_path: Path) -> None:
    writer = Ledger.open(ledger_path, CONFIRM)
    plan(writer, IDS[:2])
    batch_id, attempt = writer.start_batch("confirm", keys(IDS[:2]), "crid")
    writer.finish_attempt(batch_id, attempt, THROTTLED, None)
    writer.close()  # killed while waiting for the next try: Graph applied nothing

    reader = read_only(ledger_path)
    try:
        assert set(known(reader).values()) == {"planned"}
    finally:
        reader.close()
    resumed = Ledger.open(ledger_path, CONFIRM)
    try:
        assert resumed.recover() == {}
        assert resumed.counts(live=True) == {"confirm": {**ZERO, "planned": 2}}
    finally:
        resumed.close()


def test_recover_counts_unknowns_per_action(ledger_path: Path) -> None:
    book = Ledger.open(ledger_path, DIRECTORY)
    try:
        plan(book, IDS[:6], "disable", "revoke-sessions")
        book.start_batch(None, keys(IDS[:3], "disable") + keys(IDS[:1], "revoke-sessions"), "c1")
        b2, a2 = book.start_batch(None, keys(IDS[3:5], "disable"), "c2")
        book.finish_attempt(b2, a2, THROTTLED, None)  # answered: applied nowhere
        b3, a3 = book.start_batch(None, keys(IDS[1:3], "revoke-sessions"), "c3")
        book.finish_attempt(b3, a3, UNAVAILABLE, None)  # answered 503: may have applied
        assert book.recover() == {"disable": 3, "revoke-sessions": 3}
        assert book.counts(live=True) == {
            "disable": {**ZERO, "unknown": 3, "planned": 3},
            "revoke-sessions": {**ZERO, "unknown": 3, "planned": 3},
        }
    finally:
        book.close()


# -- JSON batches: an answer per step ------------------------------------------------------------
def test_finish_steps_records_each_inner_answer_on_its_step(ledger_path: Path) -> None:
    book = Ledger.open(ledger_path, DIRECTORY)
    try:
        plan(book, IDS[:5], "disable")
        batch_id, attempt = book.start_batch(None, keys(IDS[:5], "disable"), "crid-batch")
        outer = Answer(Outcome.ACCEPTED, http_status=200, request_id="rid-outer")
        inner_ok = Answer(Outcome.ACCEPTED, http_status=204, request_id="rid-inner")
        book.finish_steps(
            batch_id,
            attempt,
            outer,
            [
                StepResult((IDS[0], "disable"), inner_ok, StepState.DONE),
                StepResult((IDS[1], "disable"), NOT_FOUND, StepState.FAILED),
                StepResult((IDS[2], "disable"), THROTTLED, None),
                StepResult((IDS[3], "disable"), UNAVAILABLE, None),
                StepResult((IDS[4], "disable"), ACCEPTED, StepState.DONE),
            ],
        )
        assert book.counts(live=True)["disable"] == {
            **ZERO,
            "done": 2,
            "failed": 1,
            "sending": 2,
        }
        assert rows(ledger_path, "SELECT http_status, outcome, request_id FROM attempts") == [
            (200, "accepted", "rid-outer")
        ]
        again = book.release_steps(keys(IDS[2:4], "disable"))
        assert again == {(IDS[2], "disable"): "planned", (IDS[3], "disable"): "unknown"}
        assert book.release_steps([]) == {}
    finally:
        book.close()
    done = step(ledger_path, IDS[0], "disable")
    assert (done["state"], done["last_status"], done["request_id"]) == ("done", 204, "rid-inner")
    assert done["finished_at"] is not None
    failed = step(ledger_path, IDS[1], "disable")
    assert (failed["state"], failed["last_status"], failed["error_code"]) == (
        "failed",
        404,
        "Request_ResourceNotFound",
    )
    assert failed["request_id"] == "rid-outer"  # no inner request-id: the batch's
    throttled = step(ledger_path, IDS[2], "disable")
    assert (throttled["in_flight"], throttled["maybe_applied"]) == (0, 0)
    assert step(ledger_path, IDS[3], "disable")["maybe_applied"] == 1


def test_a_step_answered_in_one_batch_and_sent_again_in_another(ledger_path: Path) -> None:
    book = Ledger.open(ledger_path, DIRECTORY)
    try:
        plan(book, IDS[:2], "disable")
        b1, a1 = book.start_batch(None, keys(IDS[:2], "disable"), "crid-1")
        book.finish_steps(
            b1,
            a1,
            ACCEPTED,
            [
                StepResult((IDS[0], "disable"), ACCEPTED, StepState.DONE),
                StepResult((IDS[1], "disable"), THROTTLED, None),
            ],
        )
        b2, a2 = book.start_batch(None, keys(IDS[1:2], "disable"), "crid-2")
        book.finish_steps(
            b2, a2, ACCEPTED, [StepResult((IDS[1], "disable"), ACCEPTED, StepState.DONE)]
        )
        assert set(known(book, "disable").values()) == {"done"}
    finally:
        book.close()
    row = step(ledger_path, IDS[1], "disable")
    assert (row["batch_id"], row["attempts"], row["client_request_id"]) == (b2, 2, "crid-2")


# -- named queries -------------------------------------------------------------------------------
def settle(book: Ledger, user_ids: Sequence[str], state: StepState, answer: Answer) -> int:
    batch_id, attempt = book.start_batch("confirm", keys(user_ids), f"crid-{user_ids[0]}")
    book.finish_attempt(batch_id, attempt, answer, None)
    book.settle_batch(batch_id, state, answer)
    return batch_id


def test_the_named_sets_are_what_each_command_reads() -> None:
    assert {StepState.PLANNED, StepState.SENDING, StepState.UNKNOWN} == TO_SEND
    assert {StepState.FAILED, StepState.UNKNOWN, StepState.SENDING} == REPLAYABLE
    assert {StepState.DONE, StepState.UNKNOWN} == UNDOABLE
    assert set(MEANING) == set(StepState)
    assert all(MEANING[s] for s in StepState)


def test_replay_reads_failed_unknown_and_sending_steps(ledger_path: Path) -> None:
    book = Ledger.open(ledger_path, CONFIRM)
    plan(book, IDS)
    settle(book, IDS[0:2], StepState.FAILED, REFUSED)
    settle(book, IDS[2:3], StepState.UNKNOWN, UNAVAILABLE)
    settle(book, IDS[3:4], StepState.DONE, ACCEPTED)
    book.start_batch("confirm", keys(IDS[4:5]), "crid")  # left "sending" by a kill
    book.close()

    reader = read_only(ledger_path)
    try:
        replay = reader.replayable()
        assert replay.columns == ["user_id", "action"]
        assert replay["user_id"].to_list() == [*IDS[0:3], IDS[4]]
        by_code = reader.replayable(only_code="INVALIDREQUEST")  # codes match in any case
        assert by_code["user_id"].to_list() == IDS[0:2]
        assert reader.replayable(action="dismiss").height == 0
        assert reader.replayable(action="confirm").height == 4
        assert reader.error_codes() == {"invalidRequest": 2, "serviceNotAvailable": 1}
    finally:
        reader.close()


def test_replay_by_action_keeps_actions_apart(ledger_path: Path) -> None:
    book = Ledger.open(ledger_path, DIRECTORY)
    try:
        plan(book, IDS[:3], "disable", "revoke-sessions")
        b, _ = book.start_batch(
            None, keys(IDS[:2], "disable") + keys(IDS[:1], "revoke-sessions"), "c"
        )
        book.settle_batch(b, StepState.FAILED, NOT_FOUND)
        assert book.replayable(action="disable")["user_id"].to_list() == IDS[:2]
        assert book.replayable(action="revoke-sessions")["user_id"].to_list() == IDS[:1]
        assert book.replayable(only_code="request_resourcenotfound").height == 3
        assert book.error_codes() == {"Request_ResourceNotFound": 3}
    finally:
        book.close()


def test_error_codes_without_a_code_are_named(ledger: Ledger) -> None:
    plan(ledger, IDS[:3])
    settle(ledger, IDS[:1], StepState.UNKNOWN, LOST)
    settle(ledger, IDS[1:3], StepState.FAILED, REFUSED)
    assert list(ledger.error_codes().items()) == [("invalidRequest", 2), ("(none)", 1)]


def test_undoable_steps_are_done_or_maybe_done_with_the_account_state_before(
    ledger_path: Path,
) -> None:
    book = Ledger.open(ledger_path, DIRECTORY)
    try:
        book.add_users(users(IDS[:5], account_enabled=[True, False, True, True, None]))
        book.add_steps("disable", pl.Series(IDS[:5]))
        b1, a1 = book.start_batch(None, keys(IDS[:2], "disable"), "c1")
        book.finish_attempt(b1, a1, ACCEPTED, StepState.DONE)
        b2, a2 = book.start_batch(None, keys(IDS[2:3], "disable"), "c2")
        book.finish_attempt(b2, a2, UNAVAILABLE, None)
        book.release_batch(b2)  # unknown
        b3, _ = book.start_batch(None, keys(IDS[3:4], "disable"), "c3")
        book.settle_batch(b3, StepState.FAILED, NOT_FOUND)
        book.start_batch(None, keys(IDS[4:5], "disable"), "c4")  # in flight
        undo = book.undoable("disable")
        assert undo.rows() == [
            (IDS[0], "done", True),
            (IDS[1], "done", False),  # it was disabled before the run: enable would be wrong
            (IDS[2], "unknown", True),
            (IDS[4], "unknown", None),  # a request in flight may have applied it
        ]
        assert book.undoable("revoke-sessions").height == 0
    finally:
        book.close()


def test_done_lists_steps_done_since_a_moment(ledger: Ledger) -> None:
    plan(ledger, IDS[:4])
    settle(ledger, IDS[:2], StepState.DONE, ACCEPTED)
    other = sqlite3.connect(ledger.path, isolation_level=None)
    try:  # done yesterday, by an earlier run
        other.execute(
            "UPDATE steps SET finished_at = '2026-01-01T09:00:00.000+00:00' "
            "WHERE user_id IN (?, ?)",
            IDS[:2],
        )
    finally:
        other.close()
    between = now()
    settle(ledger, IDS[2:3], StepState.DONE, ACCEPTED)
    settle(ledger, IDS[3:4], StepState.FAILED, REFUSED)
    every = ledger.done("confirm")
    assert every.columns == ["user_id", "sent_at", "finished_at"]
    assert every["user_id"].to_list() == IDS[:3]
    assert all(every["sent_at"]) and all(every["finished_at"])
    assert ledger.done("confirm", since=between)["user_id"].to_list() == [IDS[2]]
    assert ledger.done("dismiss").height == 0


def test_the_report_has_one_typed_row_per_step(ledger: Ledger) -> None:
    plan(ledger, IDS[:3])
    batch_id, attempt = ledger.start_batch("confirm", keys(IDS[:2]), "crid-9")
    ledger.finish_attempt(
        batch_id, attempt, Answer(Outcome.ACCEPTED, 204, request_id="rid-9"), StepState.DONE
    )
    report = ledger.report()
    assert dict(report.schema) == REPORT_COLUMNS
    assert report.rows_by_key("user_id", named=True, unique=True)[IDS[0]] == {
        "action": "confirm",
        "state": "done",
        "attempts": 1,
        "last_http_status": 204,
        "error_code": None,
        "error_message": None,
        "request_id": "rid-9",
        "client_request_id": "crid-9",
        "input_value": IDS[0],
        "matched_by": "object_id",
        "source_file": "users.csv",
        "source_row": 2,
        "sent_at": report["sent_at"][0],
        "finished_at": report["finished_at"][0],
    }
    assert report["state"].to_list() == ["done", "done", "planned"]


def test_the_report_of_some_steps_has_only_those_in_their_order(ledger_path: Path) -> None:
    book = Ledger.open(ledger_path, DIRECTORY)
    try:
        plan(book, IDS[:3], "disable", "revoke-sessions")
        whole = book.report()
        assert whole.height == 6
        assert whole.select("user_id", "action").rows() == [
            (uid, action) for uid in IDS[:3] for action in ("disable", "revoke-sessions")
        ]
        wanted = [(IDS[2], "revoke-sessions"), (IDS[0], "disable")]
        some = book.report(wanted)
        assert some.select("user_id", "action").rows() == wanted
        assert book.report([]).height == 0
        assert dict(book.report([]).schema) == REPORT_COLUMNS
    finally:
        book.close()


def test_the_report_lists_every_input_value_that_found_the_user(ledger: Ledger) -> None:
    ledger.add_users(
        users(
            IDS[:2],
            input_value=["alice@contoso.com", IDS[1]],
            matched_by=["upn", "object_id"],
        )
    )
    ledger.add_steps("confirm", pl.Series(IDS[:2]))
    ledger.record_lookups(
        lookup_rows(
            input_value=["alice@contoso.com", "Alice.Smith@contoso.com", "S-1-5-21-9", "bob@x.io"],
            kind=["upn", "upn", "sid", "upn"],
            outcome=["resolved", "resolved", "ambiguous", "not_found"],
            user_id=[IDS[0], IDS[0], IDS[0], None],
        )
    )
    report = ledger.report().rows_by_key("user_id", named=True, unique=True)
    assert report[IDS[0]]["input_value"] == "alice@contoso.com; Alice.Smith@contoso.com"
    assert report[IDS[0]]["matched_by"] == "upn"
    assert report[IDS[1]]["input_value"] == IDS[1]


def test_a_live_report_shows_sending_and_a_reader_the_effective_state(ledger_path: Path) -> None:
    writer = Ledger.open(ledger_path, CONFIRM)
    try:
        plan(writer, IDS[:1])
        writer.start_batch("confirm", keys(IDS[:1]), "crid")
        assert writer.report()["state"].to_list() == ["sending"]
        reader = read_only(ledger_path)
        try:
            assert reader.report()["state"].to_list() == ["unknown"]
        finally:
            reader.close()
    finally:
        writer.close()


# -- runs and facts ------------------------------------------------------------------------------
def test_each_run_is_recorded_with_who_where_and_what(ledger: Ledger, ledger_path: Path) -> None:
    line = "batcher run ids.csv --action confirm"
    record = RunRecord("run", "d" * 64, (("ids.csv", "a" * 64),), command_line=line)
    assert ledger.last_run() is None
    run_id = ledger.begin_run(record)
    plan(ledger, IDS[:2])
    ledger.start_batch("confirm", keys(IDS[:2]), "crid")
    ledger.end_run({"done": 0, "stopped": True})
    [run] = ledger.runs()
    assert run["run_id"] == run_id
    assert run["command"] == "run"
    assert run["command_line"] == line
    assert run["os_user"] and run["host"]
    assert run["tool_version"]
    assert json.loads(str(run["inputs"])) == [{"path": "ids.csv", "sha256": "a" * 64}]
    assert run["config_digest"] == "d" * 64
    assert run["started_at"] and run["finished_at"]
    assert rows(ledger_path, "SELECT run_id FROM attempts") == [(run_id,)]
    last = ledger.last_run()
    assert last is not None
    assert last["outcome"] == {"done": 0, "stopped": True}


def test_a_later_run_is_the_last_one(ledger: Ledger) -> None:
    ledger.end_run({"ignored": True})  # no run begun: nothing to end
    first = ledger.begin_run(RunRecord("run", "x"))
    ledger.end_run({"n": 1})
    second = ledger.begin_run(RunRecord("replay", "x"))
    assert [r["run_id"] for r in ledger.runs()] == [first, second]
    last = ledger.last_run()
    assert last is not None
    assert (last["command"], last["outcome"], last["finished_at"]) == ("replay", None, None)


def test_set_meta_records_a_fact_and_replaces_it(ledger: Ledger) -> None:
    ledger.set_meta("undoes", "/tmp/a.sqlite")
    ledger.set_meta("undoes", "/tmp/b.sqlite")
    assert ledger.meta()["undoes"] == "/tmp/b.sqlite"


# -- older ledgers -------------------------------------------------------------------------------
def legacy_ledger(path: Path, version: int, action: str = "confirmCompromised") -> None:
    """A ledger as batcher wrote it at schema ``version``, by its own migrations' SQL."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    for target in range(1, version + 1):
        conn.executescript(MIGRATIONS[target])
    conn.execute(f"PRAGMA user_version = {version}")
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("action", action),
            ("tenant", "tenant-a"),
            ("cloud", "global"),
            ("api_version", "v1.0"),
            ("tool_version", "0.1.0"),
            ("created_at", "2026-01-01T00:00:00.000+00:00"),
        ],
    )
    # (user, state, attempts, the batch's attempts' outcomes: None = no answer recorded)
    shapes: list[tuple[str, str, list[str | None]]] = [
        ("confirmed", "confirmed", ["accepted"]),
        ("failed", "failed", ["bad_request"]),
        ("unknown", "unknown", ["no_answer"]),
        ("planned", "planned", []),
        ("intent only", "sending", []),  # its batch recorded, no attempt yet
        ("in flight", "sending", [None]),  # killed while the request was out
        ("throttled", "sending", ["throttled"]),  # killed between two throttled tries
        ("5xx then 429", "sending", ["server_error", "throttled"]),
    ]
    for n, (uid, (_, state, outcomes)) in enumerate(zip(IDS, shapes, strict=True)):
        batch_id = None
        if state != "planned":
            batch_id = n + 1
            conn.execute(
                "INSERT INTO batches (batch_id, size, state, created_at) VALUES (?, 1, ?, ?)",
                (batch_id, state, "2026-01-01T00:00:00"),
            )
            for k, outcome in enumerate(outcomes):
                conn.execute(
                    "INSERT INTO attempts (batch_id, client_request_id, started_at, outcome, "
                    "http_status, error_code) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        batch_id,
                        f"crid-{n}-{k}",
                        "2026-01-01T00:00:01",
                        outcome,
                        {"accepted": 204, "bad_request": 400}.get(outcome or ""),
                        "invalidRequest" if outcome == "bad_request" else None,
                    ),
                )
        conn.execute(
            "INSERT INTO ids (user_id, state, source_file, source_row, batch_id, attempts, "
            "error_code) VALUES (?, ?, 'old.csv', ?, ?, ?, ?)",
            (
                uid,
                state,
                n + 2,
                batch_id,
                len(outcomes),
                "invalidRequest" if state == "failed" else None,
            ),
        )
    conn.close()


LEGACY_STATES = {
    IDS[0]: "done",  # confirmed is done
    IDS[1]: "failed",
    IDS[2]: "unknown",
    IDS[3]: "planned",
    IDS[4]: "planned",  # sending with no attempt: nothing left
    IDS[5]: "unknown",  # sending with an unanswered attempt: may have been applied
    IDS[6]: "planned",  # sending, only ever throttled: nothing applied
    IDS[7]: "unknown",  # sending, once answered 5xx: may have been applied
}


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_ledger_migrates_and_keeps_its_states(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.sqlite"
    legacy_ledger(path, version)

    book = Ledger.open(path, CONFIRM)  # 'confirm' is what 'confirmCompromised' is called now
    try:
        assert book.schema_version() == SCHEMA_VERSION
        meta = book.meta()
        assert meta["actions"] == "confirm"
        assert "action" not in meta
        assert meta["tenant"] == "tenant-a"
        assert known(book) == LEGACY_STATES
        assert book.users() == len(IDS)
        report = book.report().rows_by_key("user_id", named=True, unique=True)
        assert report[IDS[0]]["source_file"] == "old.csv"
        assert report[IDS[0]]["source_row"] == 2
        assert report[IDS[0]]["input_value"] == IDS[0]
        assert report[IDS[0]]["matched_by"] == "object_id"
        assert report[IDS[1]]["error_code"] == "invalidRequest"
        assert book.batch_states()["done"] == 1  # the confirmed batch
        assert book.undoable("confirm")["user_id"].to_list() == [IDS[0], IDS[2], IDS[5], IDS[7]]

        # Resuming: what a kill left is settled, then what is left to send goes out.
        assert book.recover() == {"confirm": 2}
        to_send = [uid for uid, state in known(book).items() if state in TO_SEND]
        assert to_send == [IDS[2], IDS[3], IDS[4], IDS[5], IDS[6], IDS[7]]
        run_id = book.begin_run(RunRecord("run", "x"))
        batch_id, attempt = book.start_batch("confirm", keys(to_send), "crid-resume")
        book.finish_attempt(batch_id, attempt, ACCEPTED, StepState.DONE)
        book.end_run({"done": len(to_send)})
        assert book.counts() == {"confirm": {**ZERO, "done": 7, "failed": 1}}
        assert book.last_run() is not None
    finally:
        book.close()
    assert rows(path, "SELECT DISTINCT action FROM batches WHERE batch_id = ?", batch_id) == [
        ("confirm",)
    ]
    assert rows(path, "SELECT run_id FROM attempts WHERE batch_id = ?", batch_id) == [(run_id,)]
    assert rows(path, "SELECT name FROM sqlite_master WHERE name = 'ids'") == []


def test_an_older_dismiss_ledger_keeps_its_action(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    legacy_ledger(path, 2, action="dismiss")
    book = Ledger.open(path, dataclasses.replace(CONFIRM, actions=("dismiss",)))
    try:
        assert book.actions() == ("dismiss",)
        assert known(book, "dismiss") == LEGACY_STATES
    finally:
        book.close()


def test_an_older_ledger_for_another_action_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.sqlite"
    legacy_ledger(path, 2)
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="records the actions 'confirm', not 'dismiss'"):
        Ledger.open(path, dataclasses.replace(CONFIRM, actions=("dismiss",)))
    assert path.read_bytes() == before
    assert files_in(tmp_path) == {"v2.sqlite"}


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_ledger_is_read_as_todays_without_being_changed(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / f"v{version}.sqlite"
    legacy_ledger(path, version)
    before = path.read_bytes()
    reader = Ledger.open_existing(path, CONFIRM)  # the identity check reads the old 'action'
    try:  # status, report, a dry run and "done elsewhere" read older ledgers too
        assert reader.actions() == ("confirm",)
        assert known(reader) == LEGACY_STATES
        assert reader.counts() == {
            "confirm": {**ZERO, "done": 1, "failed": 1, "unknown": 3, "planned": 3}
        }
        assert reader.report().height == len(IDS)
        assert reader.done("confirm")["user_id"].to_list() == [IDS[0]]
        assert reader.runs() == [] and reader.lookups().height == 0
        assert not reader.live
    finally:
        reader.close()
    assert path.read_bytes() == before  # only its writer migrates the file
    assert files_in(tmp_path) == {path.name}


def test_migrations_split_on_whole_statements_only() -> None:
    script = """
    CREATE TABLE t (a TEXT);
    INSERT INTO t (a) VALUES ('one; two');
    INSERT INTO t (a) VALUES ('it''s;
    two lines');
    UPDATE t SET a = a || ';'
    """
    parts = statements(script)
    assert parts == [
        "CREATE TABLE t (a TEXT);",
        "INSERT INTO t (a) VALUES ('one; two');",
        "INSERT INTO t (a) VALUES ('it''s;\n    two lines');",
        "UPDATE t SET a = a || ';'",
    ]
    conn = sqlite3.connect(":memory:")
    for statement in parts:
        conn.execute(statement)
    assert conn.execute("SELECT a FROM t").fetchall() == [
        ("one; two;",),
        ("it's;\n    two lines;",),
    ]


def test_every_migration_splits_into_statements_sqlite_accepts() -> None:
    for script in MIGRATIONS.values():
        parts = statements(script)
        assert parts
        assert all(sqlite3.complete_statement(p) for p in parts)
        assert sum(p.count(";") for p in parts) >= len(parts)


# -- what an undo reversed, and what verify reads -------------------------------------------------
def test_reopen_plans_done_steps_again_as_if_never_sent_and_leaves_the_others(
    ledger: Ledger, ledger_path: Path
) -> None:
    plan(ledger, IDS[:4])
    settle(ledger, IDS[:2], StepState.DONE, ACCEPTED)
    settle(ledger, IDS[2:3], StepState.FAILED, REFUSED)
    ledger.reopen([*keys(IDS[:4]), (IDS[0], "dismiss")])  # no such step: nothing
    assert known(ledger) == {
        IDS[0]: "planned",
        IDS[1]: "planned",
        IDS[2]: "failed",  # replay's, not reopen's
        IDS[3]: "planned",
    }
    row = step(ledger_path, IDS[0])
    assert (row["sent_at"], row["finished_at"], row["maybe_applied"], row["in_flight"]) == (
        None,
        None,
        0,
        0,
    )
    assert row["attempts"] == 1  # what happened stays on record
    assert rows(ledger_path, "SELECT COUNT(*) FROM attempts") == [(2,)]
    assert ledger.undoable("confirm").height == 0


def test_applied_lists_done_and_unknown_steps_with_when_they_were_sent(ledger_path: Path) -> None:
    writer = Ledger.open(ledger_path, CONFIRM)
    plan(writer, IDS[:6])
    settle(writer, IDS[:2], StepState.DONE, ACCEPTED)
    settle(writer, IDS[2:3], StepState.UNKNOWN, LOST)
    settle(writer, IDS[3:4], StepState.FAILED, REFUSED)
    writer.start_batch("confirm", keys(IDS[4:5]), "crid")  # killed with the request out
    writer.close()
    reader = read_only(ledger_path)
    try:
        applied = reader.applied("confirm")
        assert applied.columns == ["user_id", "sent_at", "state"]
        assert applied.select("user_id", "state").rows() == [
            (IDS[0], "done"),
            (IDS[1], "done"),
            (IDS[2], "unknown"),
            (IDS[4], "unknown"),  # what the kill left counts as unknown
        ]
        assert all(applied["sent_at"])
        assert reader.applied("dismiss").height == 0
    finally:
        reader.close()


# -- the state machine guards its transitions ----------------------------------------------------
def test_an_illegal_transition_raises_and_writes_nothing(ledger: Ledger, ledger_path: Path) -> None:
    plan(ledger, IDS[:3])
    batch_id, attempt = ledger.start_batch("confirm", keys(IDS[:2]), "crid-1")
    ledger.finish_attempt(batch_id, attempt, ACCEPTED, StepState.DONE)
    before = rows(ledger_path, "SELECT * FROM steps ORDER BY user_id")
    batches = rows(ledger_path, "SELECT COUNT(*) FROM batches")
    with pytest.raises(IllegalTransition, match=rf"settle_batch .* {IDS[0]} from 'done'"):
        ledger.settle_batch(batch_id, StepState.FAILED, REFUSED)  # done is done
    with pytest.raises(IllegalTransition, match=rf"finish_attempt .* {IDS[0]} from 'done'"):
        ledger.finish_attempt(batch_id, attempt, LOST, StepState.UNKNOWN)
    with pytest.raises(IllegalTransition, match=rf"start_attempt .* {IDS[0]} from 'done'"):
        ledger.start_attempt(batch_id, "crid-2")
    with pytest.raises(IllegalTransition, match=rf"start_batch .* {IDS[0]} from 'done'"):
        ledger.start_batch("confirm", keys(IDS[:3]), "crid-3")  # a done step sent again
    with pytest.raises(IllegalTransition, match="start_batch found 1 of its 2 steps"):
        ledger.start_batch("confirm", keys([IDS[2], IDS[7]]), "crid-4")  # no such step
    again, attempt = ledger.start_batch("confirm", keys(IDS[2:3]), "crid-5")
    with pytest.raises(IllegalTransition, match="cannot settle a step as 'skipped'"):
        ledger.finish_attempt(again, attempt, ACCEPTED, StepState.SKIPPED)
    results = [StepResult((IDS[0], "confirm"), ACCEPTED, StepState.DONE)]
    with pytest.raises(IllegalTransition, match=rf"finish_steps .* {IDS[0]} from 'done'"):
        ledger.finish_steps(again, attempt, ACCEPTED, results)
    ledger.finish_attempt(again, attempt, ACCEPTED, StepState.DONE)  # the legal one
    after = rows(ledger_path, "SELECT * FROM steps WHERE user_id != ? ORDER BY user_id", IDS[2])
    assert after == [row for row in before if row[0] != IDS[2]]  # nothing else was written
    assert rows(ledger_path, "SELECT COUNT(*) FROM batches") == [(batches[0][0] + 1,)]
    assert known(ledger) == {IDS[0]: "done", IDS[1]: "done", IDS[2]: "done"}


def test_the_ledger_refuses_a_step_state_outside_the_machine(ledger_path: Path) -> None:
    Ledger.open(ledger_path, CONFIRM).close()
    conn = sqlite3.connect(ledger_path, isolation_level=None)
    try:
        conn.execute("INSERT INTO users (user_id) VALUES ('u')")
        for state in StepState:  # the CHECK allows each state, and only those
            conn.execute(
                "INSERT INTO steps (user_id, action, state) VALUES ('u', ?, ?)", (state, state)
            )
        for wrong in ("confirmed", "Done", "", "sent"):
            with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
                conn.execute("UPDATE steps SET state = ? WHERE action = 'planned'", (wrong,))
    finally:
        conn.close()


def test_a_schema_3_ledger_upgrades_keeping_its_steps_and_then_refuses_a_wrong_state(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v3.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    for target in range(1, 4):
        conn.executescript(MIGRATIONS[target])
    conn.execute("PRAGMA user_version = 3")
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("actions", "confirm"),
            ("tenant", "tenant-a"),
            ("cloud", "global"),
            ("api_version", "v1.0"),
            ("tool_version", "0.2.0"),
            ("created_at", "2026-01-01"),
        ],
    )
    states = ["done", "failed", "unknown", "planned", "skipped", "sending"]
    conn.executemany("INSERT INTO users (user_id) VALUES (?)", [(u,) for u in IDS[:6]])
    conn.executemany(
        "INSERT INTO steps (user_id, action, state, attempts, maybe_applied, error_code) "
        "VALUES (?, 'confirm', ?, ?, ?, ?)",
        [
            (u, st, n, st == "sending", f"code-{n}")
            for n, (u, st) in enumerate(zip(IDS[:6], states, strict=True))
        ],
    )
    conn.close()
    book = Ledger.open(path, CONFIRM)
    try:
        assert book.schema_version() == SCHEMA_VERSION
        assert known(book) == {IDS[n]: st for n, st in enumerate(states[:5])} | {IDS[5]: "unknown"}
    finally:
        book.close()
    assert rows(path, "SELECT user_id, state, attempts, error_code FROM steps ORDER BY rowid") == [
        (u, st, n, f"code-{n}") for n, (u, st) in enumerate(zip(IDS[:6], states, strict=True))
    ]
    assert rows(
        path, "SELECT name FROM sqlite_master WHERE tbl_name = 'steps' AND sql LIKE 'CREATE INDEX%'"
    ) == [
        ("steps_state",),
        ("steps_batch",),
    ]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            conn.execute("UPDATE steps SET state = 'confirmed' WHERE user_id = ?", (IDS[0],))
    finally:
        conn.close()
