"""The durable SQLite checkpoint ledger: one row per ID, batch and attempt."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import polars as pl

from batcher import __version__
from batcher.errors import LedgerError

SCHEMA_VERSION = 1
APPLICATION_ID = 0x42415443  # "BATC": marks a file as a batcher ledger

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE ids (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    source_file TEXT,
    source_row INTEGER,
    batch_id INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    error_code TEXT,
    error_message TEXT,
    request_id TEXT,
    client_request_id TEXT,
    sent_at TEXT,
    finished_at TEXT
);
CREATE INDEX ids_state ON ids (state);
CREATE INDEX ids_batch ON ids (batch_id);
CREATE TABLE batches (
    batch_id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE attempts (
    attempt_id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches (batch_id),
    client_request_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    http_status INTEGER,
    error_code TEXT,
    error_message TEXT,
    request_id TEXT,
    outcome TEXT
);
"""


class State(StrEnum):
    PLANNED = "planned"
    SENDING = "sending"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class RunIdentity:
    """What a ledger is about; a ledger refuses a run for another action or tenant."""

    action: str
    tenant: str
    cloud: str
    api_version: str


@dataclass(frozen=True)
class Answer:
    """The outcome of one attempt as the ledger records it."""

    outcome: str  # what the attempt got: "accepted", "throttled", "server_error", ...
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Ledger:
    """A run's durable state. Every write goes through ``_write``, one transaction each."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, identity: RunIdentity) -> Ledger:
        """Open or create the ledger for ``identity``; refuse a foreign or mismatched file."""
        fresh = not path.exists() or path.stat().st_size == 0
        if fresh:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
                os.chmod(path, 0o600)  # also when an empty file was already there
            except OSError as exc:
                raise LedgerError(
                    f"{path}: cannot create the ledger ({exc.strerror}); "
                    "choose a writable place with --ledger FILE or [ledger] dir"
                ) from None
        ledger = cls(path, _connect(path))
        if fresh:
            ledger._use_wal()
            ledger._create(identity)
        else:
            ledger._check(identity)
            ledger._use_wal()
        return ledger

    @classmethod
    def open_existing(cls, path: Path, identity: RunIdentity | None = None) -> Ledger:
        """Open a ledger that must already exist (dry run, status, report)."""
        if not path.is_file():
            raise LedgerError(f"{path}: no such ledger; the run prints its ledger path")
        ledger = cls(path, _connect(path))
        ledger._check(identity)
        ledger._use_wal()
        return ledger

    def _use_wal(self) -> None:
        # Persistent (it rewrites the file header), so only once the file is known to be ours.
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise _ledger_error(self.path, exc) from None

    def _create(self, identity: RunIdentity) -> None:
        with self._write() as db:
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("action", identity.action),
                    ("tenant", identity.tenant),
                    ("cloud", identity.cloud),
                    ("api_version", identity.api_version),
                    ("tool_version", __version__),
                    ("created_at", now()),
                ],
            )

    def _check(self, identity: RunIdentity | None) -> None:
        try:
            app_id = self._conn.execute("PRAGMA application_id").fetchone()[0]
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError:
            self.close()
            raise LedgerError(
                f"{self.path}: not a batcher ledger (not an SQLite file); "
                "it was left untouched; pass another --ledger path"
            ) from None
        if app_id != APPLICATION_ID:
            self.close()
            raise LedgerError(
                f"{self.path}: not a batcher ledger; it was left untouched; "
                "pass another --ledger path"
            )
        if version > SCHEMA_VERSION:
            self.close()
            raise LedgerError(
                f"{self.path}: written by a newer batcher (schema {version}); upgrade batcher"
            )
        if identity is None:
            return
        meta = self.meta()
        for key in ("action", "tenant"):
            if meta.get(key) != getattr(identity, key):
                self.close()
                raise LedgerError(
                    f"{self.path}: this ledger is for {key} {meta.get(key)!r}, not "
                    f"{getattr(identity, key)!r}; use another --ledger path for this run"
                )

    # -- the one write path --------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _ledger_error(self.path, exc) from None
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._conn.execute("ROLLBACK")
            raise _ledger_error(self.path, exc) from None
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    # -- reads ---------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def known_states(self) -> pl.DataFrame:
        rows = self._conn.execute("SELECT user_id, state FROM ids").fetchall()
        return pl.DataFrame(rows, schema={"user_id": pl.String, "state": pl.String}, orient="row")

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in State}
        for state, n in self._conn.execute("SELECT state, COUNT(*) FROM ids GROUP BY state"):
            counts[state] = n
        return counts

    # -- writes --------------------------------------------------------------------------------
    def add_ids(self, new_ids: pl.DataFrame) -> None:
        """Record IDs first seen in this run as planned."""
        if new_ids.height == 0:
            return
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO ids (user_id, state, source_file, source_row) "
                "VALUES (?, 'planned', ?, ?)",
                new_ids.select("user_id", "source_file", "source_row").iter_rows(),
            )

    def start_batch(self, user_ids: Sequence[str]) -> int:
        """Group IDs into a new batch and mark them sending."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO batches (size, state, created_at) VALUES (?, 'sending', ?)",
                (len(user_ids), now()),
            )
            batch_id = int(cur.lastrowid or 0)
            db.executemany(
                "UPDATE ids SET state = 'sending', batch_id = ? WHERE user_id = ?",
                [(batch_id, uid) for uid in user_ids],
            )
        return batch_id

    def start_attempt(self, batch_id: int, client_request_id: str) -> int:
        """Commit the intent to send before the request leaves."""
        stamp = now()
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO attempts (batch_id, client_request_id, started_at) VALUES (?, ?, ?)",
                (batch_id, client_request_id, stamp),
            )
            db.execute(
                "UPDATE ids SET attempts = attempts + 1, client_request_id = ?, "
                "sent_at = COALESCE(sent_at, ?) WHERE batch_id = ?",
                (client_request_id, stamp, batch_id),
            )
        return int(cur.lastrowid or 0)

    def finish_attempt(
        self, attempt_id: int, batch_id: int, answer: Answer, settle: State | None = None
    ) -> None:
        """Record an attempt's answer; with ``settle``, also settle the batch's IDs."""
        stamp = now()
        with self._write() as db:
            db.execute(
                "UPDATE attempts SET finished_at = ?, http_status = ?, error_code = ?, "
                "error_message = ?, request_id = ?, outcome = ? WHERE attempt_id = ?",
                (
                    stamp,
                    answer.http_status,
                    answer.error_code,
                    answer.error_message,
                    answer.request_id,
                    answer.outcome,
                    attempt_id,
                ),
            )
            self._record_answer(db, batch_id, answer, settle, stamp)

    def settle_batch(self, batch_id: int, state: State, answer: Answer) -> None:
        """Give a batch's IDs their final state after its last attempt."""
        with self._write() as db:
            self._record_answer(db, batch_id, answer, state, now())

    @staticmethod
    def _record_answer(
        db: sqlite3.Connection, batch_id: int, answer: Answer, settle: State | None, stamp: str
    ) -> None:
        db.execute(
            "UPDATE ids SET last_status = ?, error_code = ?, error_message = ?, request_id = ?, "
            "state = COALESCE(?, state), finished_at = CASE WHEN ? IS NULL THEN finished_at "
            "ELSE ? END WHERE batch_id = ?",
            (
                answer.http_status,
                answer.error_code,
                answer.error_message,
                answer.request_id,
                settle,
                settle,
                stamp,
                batch_id,
            ),
        )
        if settle is not None:
            db.execute("UPDATE batches SET state = ? WHERE batch_id = ?", (settle, batch_id))

    def close(self) -> None:
        self._conn.close()


def _connect(path: Path) -> sqlite3.Connection:
    """Connection-level settings only: nothing here may write to a file that is not ours."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    except sqlite3.DatabaseError as exc:
        raise _ledger_error(path, exc) from None
    try:
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _ledger_error(path, exc) from None
    return conn


def _ledger_error(path: Path, exc: sqlite3.Error) -> LedgerError:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return LedgerError(
            f"{path}: not a batcher ledger or damaged ({text}); it was left untouched; "
            "pass another --ledger path"
        )
    if "readonly" in text or "read-only" in text:
        return LedgerError(f"{path}: the ledger is read-only; make it writable or move it")
    if "full" in text:
        return LedgerError(f"{path}: the disk is full; free space, then run the same command")
    if "locked" in text or "busy" in text:
        return LedgerError(
            f"{path}: another batcher is writing this ledger; wait for it or stop it first"
        )
    return LedgerError(f"{path}: ledger error ({text}); the run stopped before sending more")
