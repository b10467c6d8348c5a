"""The durable SQLite checkpoint ledger: users, one step per user per action, batches, attempts.

Every transition below is one named method and one transaction. The intent to send is committed
once the pacer has granted the request and before it leaves; its answer when it arrives.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batcher import __version__
from batcher.ledger import reads, snapshot
from batcher.ledger.found import Found, frame_columns
from batcher.ledger.items import Item, ItemKey, Items
from batcher.ledger.moves import (
    ANSWER,
    ANSWER_EACH,
    DONE,
    FAILED,
    ITEM_RECOVER,
    PLANNED,
    RETRY,
    SENDING,
    SETTLE,
    SETTLES_TO,
    SKIPPED,
    START,
    UNKNOWN,
    Key,
)
from batcher.ledger.reads import EFFECTIVE_STATE, Reads
from batcher.ledger.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from batcher.ledger.snapshot import Snapshots
from batcher.ledger.states import (
    IN_FLIGHT,
    MEANING,
    REPLAYABLE,
    SENDABLE,
    SETTLED,
    TO_SEND,
    UNDOABLE,
    BatchState,
    IllegalTransition,
    ItemState,
    Move,
    RunRecord,
    RunScope,
    StepState,
    move,
    now,
)
from batcher.ledger.store import WriterLock
from batcher.outcomes import Answer, Outcome

if TYPE_CHECKING:
    import polars as pl

    from batcher.ledger.reads import LOOKUP_COLUMNS, REPORT_COLUMNS
    from batcher.ledger.snapshot import SNAPSHOT_COLUMNS


def __getattr__(name: str) -> object:
    """The frames' schemas, built on first use: a command that reads no frame loads no polars."""
    if name in ("LOOKUP_COLUMNS", "REPORT_COLUMNS"):
        return getattr(reads, name)
    if name == "SNAPSHOT_COLUMNS":
        return snapshot.SNAPSHOT_COLUMNS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "APPLICATION_ID",
    "EFFECTIVE_STATE",
    "IN_FLIGHT",
    "LOOKUP_COLUMNS",
    "MEANING",
    "MIGRATIONS",
    "REPLAYABLE",
    "REPORT_COLUMNS",
    "SCHEMA_VERSION",
    "SENDABLE",
    "SETTLED",
    "SNAPSHOT_COLUMNS",
    "TO_SEND",
    "UNDOABLE",
    "Answer",
    "BatchState",
    "IllegalTransition",
    "Item",
    "ItemKey",
    "ItemState",
    "Ledger",
    "Outcome",
    "RunRecord",
    "RunScope",
    "StepResult",
    "StepState",
    "WriterLock",
    "now",
]


@dataclass(frozen=True)
class StepResult:
    """One inner answer of a JSON batch: the step, its answer, and its new state (None: it
    goes back to the queue to be sent again)."""

    key: Key
    answer: Answer
    settle: StepState | None


class Ledger(Reads, Snapshots, Found, Items):
    """A run's durable state: the named transitions of the step state machine."""

    # -- runs ----------------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Settle what a stopped or killed run left 'sending': unknown when a request carrying
        it may have been applied (sent and not answered, or answered 5xx), else planned again.
        Returns, per action, how many became unknown."""
        with self._write() as db:
            unknown = dict(
                db.execute(
                    "SELECT action, COUNT(*) FROM steps WHERE state = ? "
                    "AND (in_flight OR maybe_applied) GROUP BY action",
                    (SENDING,),
                ).fetchall()
            )
            db.execute(
                "UPDATE steps SET state = CASE WHEN in_flight OR maybe_applied THEN ? "
                "ELSE ? END, maybe_applied = in_flight OR maybe_applied, in_flight = 0 "
                "WHERE state = ?",
                (UNKNOWN, PLANNED, SENDING),
            )
            db.execute(
                "UPDATE batches SET state = ? WHERE state = ?",
                (BatchState.UNKNOWN, BatchState.SENDING),
            )
            sending = db.execute("SELECT DISTINCT action FROM items WHERE state = 'sending'")
            move(db, ITEM_RECOVER, [((), (a,)) for (a,) in sending.fetchall()])
        return unknown

    def begin_run(self, record: RunRecord) -> int:
        """Record who started this run, on which inputs and settings."""
        inputs = [{"path": p, "sha256": h} for p, h in record.inputs]
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO runs (command, tool_version, os_user, host, config_digest, inputs, "
                "started_at, command_line, cwd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.command,
                    __version__,
                    _os_user(),
                    socket.gethostname(),
                    record.config_digest,
                    json.dumps(inputs),
                    now(),
                    record.command_line,
                    record.cwd or os.getcwd(),
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

    def set_meta(self, key: str, value: str) -> None:
        """Record a fact about the ledger (an undo ledger names the ledger it undoes)."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- users, steps and look-ups -------------------------------------------------------------
    def add_users(self, users: pl.DataFrame) -> None:
        """Record users first seen in this run (user_id, source_file, source_row, input_value,
        matched_by, user_type, account_enabled as read before the run); a user already known
        keeps its first record."""
        if users.height == 0:
            return
        columns = (
            "user_id",
            "source_file",
            "source_row",
            "input_value",
            "matched_by",
            "user_type",
            "account_enabled",
        )
        frame = frame_columns(users, columns)
        with self._write() as db:
            db.executemany(
                f"INSERT OR IGNORE INTO users ({', '.join(columns)}) VALUES "
                f"({', '.join('?' * len(columns))})",
                frame.iter_rows(),
            )

    def add_steps(self, action: str, user_ids: pl.Series) -> None:
        """Plan ``action`` for users that have no step for it yet."""
        if user_ids.len() == 0:
            return
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO steps (user_id, action, state) VALUES (?, ?, ?)",
                ((uid, action, PLANNED) for uid in user_ids),
            )

    def skip_steps(self, action: str, user_ids: pl.Series, reason: str) -> None:
        """Record that ``action`` does not apply to these users, and why."""
        if user_ids.len() == 0:
            return
        stamp = now()
        with self._write() as db:
            db.executemany(
                "INSERT INTO steps (user_id, action, state, error_message, finished_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, action) DO UPDATE SET "
                "state = excluded.state, error_message = excluded.error_message, "
                "finished_at = excluded.finished_at WHERE state = ?",
                ((uid, action, SKIPPED, reason, stamp, PLANNED) for uid in user_ids),
            )

    # -- batches and attempts ------------------------------------------------------------------
    def start_batch(
        self, action: str | None, keys: Sequence[Key], client_request_id: str
    ) -> tuple[int, int]:
        """The intent to send these steps in one request (its first attempt): commits them
        'sending' before the request leaves. Returns the batch's and the attempt's ids."""
        stamp = now()
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO batches (size, state, created_at, action) VALUES (?, ?, ?, ?)",
                (len(keys), BatchState.SENDING, stamp, action),
            )
            batch_id = int(cur.lastrowid or 0)
            attempt_id = self._insert_attempt(db, batch_id, client_request_id, stamp)
            sets = (SENDING, batch_id, client_request_id, stamp)
            move(db, START, [(sets, key) for key in keys], expect=len(keys))
        return batch_id, attempt_id

    def start_attempt(self, batch_id: int, client_request_id: str) -> int:
        """The intent to send a batch again (another attempt of the same request)."""
        stamp = now()
        with self._write() as db:
            attempt_id = self._insert_attempt(db, batch_id, client_request_id, stamp)
            move(db, RETRY, [((client_request_id,), (batch_id,))])
        return attempt_id

    def _insert_attempt(
        self, db: sqlite3.Connection, batch_id: int, client_request_id: str, stamp: str
    ) -> int:
        cur = db.execute(
            "INSERT INTO attempts (batch_id, run_id, client_request_id, started_at) "
            "VALUES (?, ?, ?, ?)",
            (batch_id, self.run_id, client_request_id, stamp),
        )
        return int(cur.lastrowid or 0)

    def finish_attempt(
        self, batch_id: int, attempt_id: int, answer: Answer, settle: StepState | None
    ) -> None:
        """Record an attempt's answer for every step of the batch; ``settle`` gives them their
        final state (None: they stay 'sending', to be tried again)."""
        _settles(ANSWER, settle)
        stamp = now()
        with self._write() as db:
            self._answer_attempt(db, attempt_id, answer, stamp)
            move(db, ANSWER, [(_answered(answer, settle, stamp), (batch_id,))])
            if settle is not None:
                db.execute(
                    "UPDATE batches SET state = ? WHERE batch_id = ?",
                    (BatchState(settle.value), batch_id),
                )

    def finish_steps(
        self, batch_id: int, attempt_id: int, outer: Answer, results: Sequence[StepResult]
    ) -> None:
        """Record a JSON batch's answer: the outer one on the attempt, each inner one on its
        step (a step whose result does not settle it stays 'sending', to be sent again)."""
        for r in results:
            _settles(ANSWER_EACH, r.settle)
        stamp = now()
        with self._write() as db:
            self._answer_attempt(db, attempt_id, outer, stamp)
            rows = [
                (_answered(r.answer, r.settle, stamp, outer.request_id), r.key) for r in results
            ]
            move(db, ANSWER_EACH, rows, expect=len(rows))
            db.execute(
                "UPDATE batches SET state = ? WHERE batch_id = ?", (BatchState.DONE, batch_id)
            )

    @staticmethod
    def _answer_attempt(
        db: sqlite3.Connection, attempt_id: int, answer: Answer, stamp: str
    ) -> None:
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

    def settle_batch(self, batch_id: int, state: StepState, answer: Answer) -> None:
        """Give a batch's steps their final state after its last attempt."""
        _settles(SETTLE, state)
        stamp = now()
        sets = (state, answer.http_status, answer.error_code, answer.error_message)
        with self._write() as db:
            move(db, SETTLE, [((*sets, answer.request_id, stamp), (batch_id,))])
            db.execute(
                "UPDATE batches SET state = ? WHERE batch_id = ?",
                (BatchState(state.value), batch_id),
            )

    def replan(self, keys: Sequence[Key]) -> None:
        """Failed steps Graph refused for a reason that was not theirs (a missing permission)
        go back to planned: the same command sends them once the cause is fixed."""
        with self._write() as db:
            db.executemany(
                "UPDATE steps SET state = ?, finished_at = NULL "
                "WHERE user_id = ? AND action = ? AND state = ?",
                [(PLANNED, *key, FAILED) for key in keys],
            )

    def reopen(self, keys: Sequence[Key]) -> None:
        """Done steps that an undo reversed afterwards go back to planned: the account is as
        it was before the run again, so the same command must send them again rather than
        count them done. A fresh start: no longer sent, nor maybe applied."""
        with self._write() as db:
            db.executemany(
                "UPDATE steps SET state = ?, finished_at = NULL, sent_at = NULL, "
                "maybe_applied = 0, in_flight = 0 WHERE user_id = ? AND action = ? "
                "AND state = ?",
                [(PLANNED, *key, DONE) for key in keys],
            )

    def split_batch(self, batch_id: int) -> None:
        """A 400 split this batch in halves: its steps move on to new batches."""
        with self._write() as db:
            db.execute(
                "UPDATE batches SET state = ? WHERE batch_id = ?", (BatchState.SPLIT, batch_id)
            )

    def release_batch(self, batch_id: int) -> int:
        """Stop trying a batch (out of retry time, or the run stops): each step is unknown
        when a request carrying it may have been applied, else planned again. Returns how
        many became unknown."""
        with self._write() as db:
            db.execute(
                "UPDATE steps SET in_flight = 0, state = CASE WHEN maybe_applied THEN ? "
                "ELSE ? END, finished_at = ? WHERE batch_id = ? AND state = ?",
                (UNKNOWN, PLANNED, now(), batch_id, SENDING),
            )
            unknown = int(
                db.execute(
                    "SELECT COUNT(*) FROM steps WHERE batch_id = ? AND state = ?",
                    (batch_id, UNKNOWN),
                ).fetchone()[0]
            )
            db.execute(
                "UPDATE batches SET state = ? WHERE batch_id = ?",
                (BatchState.UNKNOWN if unknown else BatchState.RELEASED, batch_id),
            )
        return unknown

    def release_steps(self, keys: Sequence[Key]) -> dict[Key, StepState]:
        """The same for single steps that wait to be sent again when their run stops trying;
        returns each one's new state."""
        if not keys:
            return {}
        states: dict[Key, StepState] = {}
        with self._write() as db:
            db.executemany(
                "UPDATE steps SET in_flight = 0, state = CASE WHEN maybe_applied THEN ? "
                "ELSE ? END WHERE user_id = ? AND action = ? AND state = ?",
                [(UNKNOWN, PLANNED, *key, SENDING) for key in keys],
            )
            for key in keys:
                row = db.execute(
                    "SELECT state FROM steps WHERE user_id = ? AND action = ?", key
                ).fetchone()
                states[key] = StepState(row[0]) if row else StepState.PLANNED
        return states


def _settles(step: Move, to: StepState | None) -> None:
    """An answer settles a step as done, failed or unknown (None: not yet)."""
    if to is not None and to not in SETTLES_TO:
        raise IllegalTransition(f"ledger: {step.name} cannot settle a step as {to.value!r}")


def _answered(
    answer: Answer, settle: StepState | None, stamp: str, request_id: str | None = None
) -> tuple[object, ...]:
    """The parameters of ANSWERED (``request_id``: the outer one, when the answer has none)."""
    return (
        answer.maybe_applied,
        answer.http_status,
        answer.error_code,
        answer.error_message,
        answer.request_id or request_id,
        settle,
        settle,
        stamp,
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
