"""Opening a ledger file: ownership checks, the writer lock, migrations and the one write path."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from batcher import __version__, failpoints
from batcher.actions import ACTIONS
from batcher.errors import LedgerError
from batcher.ledger.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, statements
from batcher.ledger.states import RunScope, now
from batcher.platform import FileLock, create_private

NOT_OURS = "it was left untouched; give the path of a batcher ledger (each run prints its own)"
# an action's name in ledgers written before actions were data -> its name today
_TODAYS_NAME = {a.legacy: a.name for a in ACTIONS.values() if a.legacy}


class Store:
    """A ledger's connection. Every write goes through ``_write``, one transaction each.

    ``open`` is for the one writer and holds a lock beside the file until ``close``;
    ``open_existing`` is for readers (status, report, verify, dry run) and takes no lock (an
    older ledger is read through a copy in memory, migrated there).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock: WriterLock | None = None
        self.run_id: int | None = None
        self._grouped = False  # inside ``grouped``: each write is a savepoint of its transaction

    @classmethod
    def open(cls, path: Path, scope: RunScope | None = None) -> Self:
        """Open or create the ledger as its only writer (``scope``: what it must be about).

        Refuses a foreign or mismatched file, leaving it untouched, and a ledger that another
        batcher is writing. A new ledger needs ``scope``.
        """
        if path.is_dir():
            raise LedgerError(
                f"{path}: is a directory; --ledger takes a file path, e.g. {path}/incident.sqlite"
            )
        fresh = not path.exists() or path.stat().st_size == 0
        if fresh:
            if scope is None:
                raise LedgerError(f"{path}: no such ledger; the run prints its ledger path")
            try:
                create_private(path)
            except OSError as exc:
                raise LedgerError(
                    f"{path}: cannot create the ledger ({exc.strerror}); "
                    "choose a writable place with --ledger FILE or [ledger] dir"
                ) from None
        ledger = cls(path, _connect(path))
        if not fresh:
            ledger._check(scope)  # reads only: a refused file is left as it was
        try:
            lock = WriterLock.acquire(path)
        except LedgerError:
            ledger.close()
            raise
        try:
            ledger._use_wal()
            ledger._migrate(scope if fresh else None)
        except BaseException:
            lock.release()
            raise
        ledger._lock = lock
        return ledger

    @classmethod
    def open_existing(cls, path: Path, scope: RunScope | None = None) -> Self:
        """Open a ledger that must already exist, to read it."""
        if not path.is_file():
            raise LedgerError(f"{path}: no such ledger; the run prints its ledger path")
        ledger = cls(path, _connect(path))
        ledger._check(scope)
        if ledger.schema_version() < SCHEMA_VERSION:
            ledger._read_migrated()
        return ledger

    def _read_migrated(self) -> None:
        """Read an older ledger through today's schema: a copy in memory, migrated there; the
        file is left as it is (only its writer migrates it)."""
        memory = sqlite3.connect(":memory:", isolation_level=None)
        try:
            self._conn.backup(memory)
            _upgrade(memory, int(memory.execute("PRAGMA user_version").fetchone()[0]))
        except sqlite3.Error as exc:
            memory.close()
            self.close()
            raise _ledger_error(self.path, exc) from None
        self._conn.close()
        self._conn = memory

    def _use_wal(self) -> None:
        # Persistent (it rewrites the file header), so only once the file is known to be ours.
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise _ledger_error(self.path, exc) from None

    def _migrate(self, scope: RunScope | None) -> None:
        """Bring the schema to SCHEMA_VERSION; a new ledger also gets its scope."""
        version = self.schema_version()
        if version == SCHEMA_VERSION:
            return
        try:
            with self._write() as db:
                if version == 0:
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                _upgrade(db, version)
                if scope is not None:
                    db.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        [
                            ("actions", ",".join(scope.actions)),
                            ("tenant", scope.tenant),
                            ("cloud", scope.cloud),
                            ("api_version", scope.api_version),
                            ("tool_version", __version__),
                            ("created_at", now()),
                        ],
                    )
        except LedgerError:
            self.close()
            raise

    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _check(self, scope: RunScope | None) -> None:
        try:
            app_id = self._conn.execute("PRAGMA application_id").fetchone()[0]
            version = self.schema_version()
            meta = self.meta() if app_id == APPLICATION_ID else {}
        except sqlite3.DatabaseError:
            self.close()
            raise LedgerError(
                f"{self.path}: not a batcher ledger (not an SQLite file, or damaged); {NOT_OURS}"
            ) from None
        if app_id != APPLICATION_ID:
            self.close()
            raise LedgerError(f"{self.path}: not a batcher ledger; {NOT_OURS}")
        if version > SCHEMA_VERSION:
            self.close()
            raise LedgerError(
                f"{self.path}: written by a newer batcher (schema {version}); upgrade batcher"
            )
        if scope is not None:
            self._check_scope(meta, scope)

    def _check_scope(self, meta: dict[str, str], scope: RunScope) -> None:
        actions = meta.get("actions") or _legacy_action(meta.get("action"))
        if actions != ",".join(scope.actions):
            self.close()
            raise LedgerError(
                f"{self.path}: this ledger records the actions {actions!r}, not "
                f"{','.join(scope.actions)!r}; run the same actions on it, or use another "
                "--ledger path for these"
            )
        if meta.get("tenant") != scope.tenant:
            self.close()
            raise LedgerError(
                f"{self.path}: this ledger is for tenant {meta.get('tenant')!r}, not "
                f"{scope.tenant!r}; use another --ledger path for this run"
            )

    @property
    def live(self) -> bool:
        """True when this connection is the ledger's writer."""
        return self._lock is not None

    # -- the one write path --------------------------------------------------------------------
    @contextmanager
    def grouped(self) -> Iterator[None]:
        """The writes made inside commit together, in one transaction (a group commit: one
        sync to disk for many); each write is still all or nothing (a savepoint), and one that
        fails leaves the others to commit."""
        with self._write():
            self._grouped = True
            try:
                yield
            finally:
                self._grouped = False

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self._grouped:
            with self._savepoint() as db:
                yield db
            return
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

    @contextmanager
    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("SAVEPOINT one_write")
        try:
            yield self._conn
        except sqlite3.Error as exc:
            self._conn.execute("ROLLBACK TO one_write")
            self._conn.execute("RELEASE one_write")
            raise _ledger_error(self.path, exc) from None
        except BaseException:
            self._conn.execute("ROLLBACK TO one_write")
            self._conn.execute("RELEASE one_write")
            raise
        self._conn.execute("RELEASE one_write")

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
            self._conn.execute("ROLLBACK")

    def meta(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def close(self) -> None:
        self._conn.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _upgrade(db: sqlite3.Connection, version: int) -> None:
    """Run the migrations from schema ``version`` to SCHEMA_VERSION on ``db``."""
    for target in sorted(t for t in MIGRATIONS if t > version):
        for statement in statements(MIGRATIONS[target]):
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _legacy_action(action: str | None) -> str | None:
    """A schema-2 ledger's single action, by today's name (read before its migration)."""
    return _TODAYS_NAME.get(action or "", action)


class WriterLock:
    """One writer per ledger: an OS lock on ``<ledger>.lock``, released on exit and when the
    process is killed; the file names the holder and is removed when released."""

    def __init__(self, lock: FileLock) -> None:
        self._lock = lock

    @classmethod
    def acquire(cls, ledger: Path) -> WriterLock:
        path = ledger.with_name(ledger.name + ".lock")
        try:
            got = FileLock.try_acquire(path)
        except OSError as exc:
            raise LedgerError(
                f"{path}: cannot create the ledger's lock file ({exc.strerror}); "
                "put the ledger in a writable folder with --ledger FILE"
            ) from None
        if isinstance(got, str):
            raise LedgerError(
                f"{ledger}: another batcher is writing this ledger ({got}); wait for it to "
                "finish or stop it; `batcher status` can read the ledger meanwhile"
            )
        return cls(got)

    @staticmethod
    def held(ledger: Path) -> bool:
        """Whether a live batcher writes this ledger now (without taking the lock for long)."""
        path = ledger.with_name(ledger.name + ".lock")
        if not path.exists():
            return False
        try:
            got = FileLock.try_acquire(path)
        except OSError:
            return False
        if isinstance(got, str):
            return True
        got.release()
        return False

    def release(self) -> None:
        self._lock.release()


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
        return LedgerError(f"{path}: not a batcher ledger or damaged ({text}); {NOT_OURS}")
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
