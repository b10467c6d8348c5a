"""The durable SQLite checkpoint ledger: one row per ID, batch and attempt."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import polars as pl

from batcher import __version__, failpoints
from batcher.errors import LedgerError

APPLICATION_ID = 0x42415443  # "BATC": marks a file as a batcher ledger

# Each migration takes the ledger from the version before it to its own number; a new ledger
# runs them all. Never edit a released migration: add the next one.
MIGRATIONS: dict[int, str] = {
    1: """
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
    """,
    2: """
    CREATE TABLE runs (
        run_id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        tool_version TEXT NOT NULL,
        os_user TEXT,
        host TEXT,
        config_digest TEXT,
        inputs TEXT NOT NULL DEFAULT '[]',
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT
    );
    ALTER TABLE attempts ADD COLUMN run_id INTEGER REFERENCES runs (run_id);
    """,
}
SCHEMA_VERSION = max(MIGRATIONS)


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


@dataclass(frozen=True)
class RunRecord:
    """Who ran what, from which inputs, with which settings (a digest: never secrets)."""

    command: str
    config_digest: str
    inputs: tuple[tuple[str, str], ...] = ()  # (path, sha256)


REPORT_COLUMNS = (
    "user_id",
    "status",
    "attempts",
    "last_http_status",
    "error_code",
    "error_message",
    "request_id",
    "client_request_id",
    "source_file",
    "source_row",
    "sent_at",
    "finished_at",
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Ledger:
    """A run's durable state. Every write goes through ``_write``, one transaction each.

    ``open`` is for the one writer and holds a lock beside the file until ``close``;
    ``open_existing`` is for readers (status, report, dry run) and takes no lock.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock: WriterLock | None = None
        self.run_id: int | None = None

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, identity: RunIdentity) -> Ledger:
        """Open or create the ledger for ``identity`` as its only writer.

        Refuses a foreign or mismatched file (leaving it untouched) and a ledger that another
        batcher is writing.
        """
        if path.is_dir():
            raise LedgerError(
                f"{path}: is a directory; --ledger takes a file path, e.g. {path}/incident.sqlite"
            )
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
        if not fresh:
            ledger._check(identity)  # reads only: a refused file is left as it was
        try:
            lock = WriterLock.acquire(path)
        except LedgerError:
            ledger.close()
            raise
        try:
            ledger._use_wal()
            ledger._migrate(identity if fresh else None)
        except BaseException:
            lock.release()
            raise
        ledger._lock = lock
        return ledger

    @classmethod
    def open_existing(cls, path: Path, identity: RunIdentity | None = None) -> Ledger:
        """Open a ledger that must already exist, to read it (dry run, status, report)."""
        if not path.is_file():
            raise LedgerError(f"{path}: no such ledger; the run prints its ledger path")
        ledger = cls(path, _connect(path))
        ledger._check(identity)
        return ledger

    def _use_wal(self) -> None:
        # Persistent (it rewrites the file header), so only once the file is known to be ours.
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise _ledger_error(self.path, exc) from None

    def _migrate(self, identity: RunIdentity | None) -> None:
        """Bring the schema to SCHEMA_VERSION; a new ledger also gets its identity."""
        version = self.schema_version()
        if version == SCHEMA_VERSION:
            return
        try:
            with self._write() as db:
                if version == 0:
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[target].split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                if identity is not None:
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
        except LedgerError:
            self.close()
            raise

    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _check(self, identity: RunIdentity | None) -> None:
        try:
            app_id = self._conn.execute("PRAGMA application_id").fetchone()[0]
            version = self.schema_version()
            meta = self.meta() if app_id == APPLICATION_ID else {}
        except sqlite3.DatabaseError:
            self.close()
            raise LedgerError(
                f"{self.path}: not a batcher ledger (not an SQLite file, or damaged); "
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
        failpoints.hit("ledger.before_begin")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _ledger_error(self.path, exc) from None
        try:
            yield self._conn
            failpoints.hit("ledger.before_commit")
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _ledger_error(self.path, exc) from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
            self._conn.execute("ROLLBACK")

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

    def replay_candidates(self, only_code: str | None = None) -> list[str]:
        """IDs a replay sends again: failed, unknown, and sending left behind by a crash."""
        sql = "SELECT user_id FROM ids WHERE state IN ('failed', 'unknown', 'sending')"
        params: tuple[str, ...] = ()
        if only_code is not None:
            sql += " AND error_code = ? COLLATE NOCASE"
            params = (only_code,)
        return [row[0] for row in self._conn.execute(sql + " ORDER BY rowid", params)]

    def error_codes(self) -> dict[str, int]:
        """Graph error codes of failed and unknown IDs, with how many IDs have each."""
        rows = self._conn.execute(
            "SELECT COALESCE(error_code, '(none)'), COUNT(*) FROM ids "
            "WHERE state IN ('failed', 'unknown') GROUP BY 1 ORDER BY 2 DESC"
        )
        return dict(rows.fetchall())

    def export(self) -> pl.DataFrame:
        """One row per ID with its state and the last answer Graph gave for it."""
        rows = self._conn.execute(
            "SELECT user_id, state, attempts, last_status, error_code, error_message, "
            "request_id, client_request_id, source_file, source_row, sent_at, finished_at "
            "FROM ids ORDER BY rowid"
        ).fetchall()
        integers = {"attempts", "last_http_status", "source_row"}
        schema: dict[str, type[pl.DataType]] = {
            name: pl.Int64 if name in integers else pl.String for name in REPORT_COLUMNS
        }
        return pl.DataFrame(rows, schema=schema, orient="row")

    def runs(self) -> list[dict[str, object]]:
        cur = self._conn.execute("SELECT * FROM runs ORDER BY run_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # -- writes --------------------------------------------------------------------------------
    def begin_run(self, record: RunRecord) -> int:
        """Record who started this run, on which inputs and settings."""
        inputs = [{"path": p, "sha256": h} for p, h in record.inputs]
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO runs (command, tool_version, os_user, host, config_digest, inputs, "
                "started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.command,
                    __version__,
                    _os_user(),
                    socket.gethostname(),
                    record.config_digest,
                    json.dumps(inputs),
                    now(),
                ),
            )
        self.run_id = int(cur.lastrowid or 0)
        return self.run_id

    def end_run(self, outcome: dict[str, object]) -> None:
        if self.run_id is None:
            return
        with self._write() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ? WHERE run_id = ?",
                (now(), json.dumps(outcome), self.run_id),
            )

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

    def split_batch(self, batch_id: int) -> None:
        """A 400 split this batch in halves: its IDs move on to new batches."""
        with self._write() as db:
            db.execute("UPDATE batches SET state = 'split' WHERE batch_id = ?", (batch_id,))

    def start_attempt(self, batch_id: int, client_request_id: str) -> int:
        """Commit the intent to send before the request leaves."""
        stamp = now()
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO attempts (batch_id, run_id, client_request_id, started_at) "
                "VALUES (?, ?, ?, ?)",
                (batch_id, self.run_id, client_request_id, stamp),
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
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class WriterLock:
    """An exclusive OS lock on ``<ledger>.lock``: one writer per ledger, released on exit,
    also when the process is killed. The file tells a refused run who holds it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, ledger: Path) -> WriterLock:
        path = ledger.with_name(ledger.name + ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LedgerError(
                f"{path}: cannot create the ledger's lock file ({exc.strerror}); "
                "put the ledger in a writable folder with --ledger FILE"
            ) from None
        try:
            _lock_fd(fd)
        except OSError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise LedgerError(
                f"{ledger}: another batcher is writing this ledger ({holder}); wait for it to "
                "finish or stop it; `batcher status` can read the ledger meanwhile"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now()}".encode())
        return cls(path, fd)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)


def _lock_fd(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


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
    stop = "nothing unrecorded was sent; run the same command to resume"
    if "not a database" in text or "malformed" in text:
        return LedgerError(
            f"{path}: not a batcher ledger or damaged ({text}); it was left untouched; "
            "pass another --ledger path"
        )
    if "readonly" in text or "read-only" in text:
        return LedgerError(f"{path}: the ledger is read-only; make it writable; {stop}")
    if "full" in text or "disk I/O error" in text:
        return LedgerError(
            f"{path}: cannot write the ledger ({text}: is the disk full?); {stop}"
            " once there is space"
        )
    if "locked" in text or "busy" in text:
        return LedgerError(
            f"{path}: another batcher is writing this ledger; wait for it or stop it first"
        )
    return LedgerError(f"{path}: cannot write the ledger ({text}); {stop}")
