"""The ledger's named queries: what a plan, replay, undo, verify, status and report read."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING

from batcher.ledger.states import REPLAYABLE, UNDOABLE, StepState
from batcher.ledger.store import Store

if TYPE_CHECKING:
    import polars as pl

# A 'sending' step outside a live run was left by a kill: it counts as unknown when a request
# carrying it may have been applied, and as planned when none can have been.
EFFECTIVE_STATE = (
    "CASE WHEN s.state = 'sending' THEN CASE WHEN s.in_flight OR s.maybe_applied "
    "THEN 'unknown' ELSE 'planned' END ELSE s.state END"
)

_USER_FIELDS = ("input_value", "matched_by", "source_file", "source_row")  # users', not steps'


@cache
def _schemas() -> dict[str, dict[str, type[pl.DataType]]]:
    """The frames' schemas, built on first use: a command that reads no frame loads no polars."""
    import polars as pl

    report: dict[str, type[pl.DataType]] = {
        "user_id": pl.String,
        "action": pl.String,
        "state": pl.String,
        "attempts": pl.Int64,
        "last_http_status": pl.Int64,
        "error_code": pl.String,
        "error_message": pl.String,
        "request_id": pl.String,
        "client_request_id": pl.String,
        "input_value": pl.String,
        "matched_by": pl.String,
        "source_file": pl.String,
        "source_row": pl.Int64,
        "sent_at": pl.String,
        "finished_at": pl.String,
    }
    lookup: dict[str, type[pl.DataType]] = {
        "input_value": pl.String,
        "kind": pl.String,
        "user_id": pl.String,
        "user_principal_name": pl.String,
        "matched_by": pl.String,
        "outcome": pl.String,
        "reason": pl.String,
        "source_file": pl.String,
        "source_row": pl.Int64,
        "user_type": pl.String,
        "account_enabled": pl.Boolean,
        "on_premises_sync": pl.Boolean,
    }
    step = {"step_row": pl.Int64} | {
        name: dtype for name, dtype in report.items() if name not in _USER_FIELDS
    }
    user = {"user_row": pl.Int64, "user_id": pl.String} | {
        name: report[name] for name in _USER_FIELDS
    }
    return {"REPORT_COLUMNS": report, "LOOKUP_COLUMNS": lookup, "step": step, "user": user}


if TYPE_CHECKING:
    REPORT_COLUMNS: dict[str, type[pl.DataType]]  # a report's columns and their types
    LOOKUP_COLUMNS: dict[str, type[pl.DataType]]  # a look-up outcome's


def __getattr__(name: str) -> dict[str, type[pl.DataType]]:
    if name in ("REPORT_COLUMNS", "LOOKUP_COLUMNS"):
        return _schemas()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_IN_REPLAYABLE = ", ".join(f"'{s}'" for s in sorted(REPLAYABLE))
_IN_UNDOABLE = ", ".join(f"'{s}'" for s in sorted(UNDOABLE))


class Reads(Store):
    """Named reads; nothing outside the ledger filters rows itself."""

    def _state(self, live: bool) -> str:
        return "s.state" if live else EFFECTIVE_STATE

    def actions(self) -> tuple[str, ...]:
        return tuple(a for a in self.meta().get("actions", "").split(",") if a)

    def known_steps(self) -> pl.DataFrame:
        """(user_id, action, state) of every step, 'sending' left by a kill resolved.

        Read one action at a time: a column less to fetch makes a resume of a million-step
        ledger start a few tenths of a second sooner."""
        import polars as pl

        schema = {"user_id": pl.String, "state": pl.String}
        frames = [
            pl.DataFrame(
                self._conn.execute(
                    f"SELECT s.user_id, {EFFECTIVE_STATE} FROM steps s WHERE s.action = ?",
                    (action,),
                ).fetchall(),
                schema=schema,
                orient="row",
            ).select("user_id", pl.lit(action).alias("action"), "state")
            for action in self.actions()  # a ledger holds steps of its own actions only
        ]
        if not frames:
            return pl.DataFrame(schema={"user_id": pl.String, "action": pl.String, **schema})
        return pl.concat(frames)

    def counts(self, *, live: bool = False) -> dict[str, dict[str, int]]:
        """Steps per state, per action (every state present, zeros included)."""
        counts = {a: {s.value: 0 for s in StepState} for a in self.actions()}
        rows = self._conn.execute(
            f"SELECT s.action, {self._state(live)}, COUNT(*) FROM steps s GROUP BY 1, 2"
        )
        for action, state, n in rows:
            counts.setdefault(action, {s.value: 0 for s in StepState})[state] = n
        return counts

    def users(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def replayable(self, action: str | None = None, only_code: str | None = None) -> pl.DataFrame:
        """(user_id, action) of the steps a replay sends: failed, unknown, or left sending."""
        import polars as pl

        sql = f"SELECT s.user_id, s.action FROM steps s WHERE s.state IN ({_IN_REPLAYABLE})"
        params: list[str] = []
        if action is not None:
            sql += " AND s.action = ?"
            params.append(action)
        if only_code is not None:
            sql += " AND s.error_code = ? COLLATE NOCASE"
            params.append(only_code)
        rows = self._conn.execute(sql + " ORDER BY s.rowid", params).fetchall()
        return pl.DataFrame(rows, schema={"user_id": pl.String, "action": pl.String}, orient="row")

    def error_codes(self) -> dict[str, int]:
        """Graph error codes of failed and unknown steps, with how many steps have each."""
        rows = self._conn.execute(
            "SELECT COALESCE(error_code, '(none)'), COUNT(*) FROM steps "
            "WHERE state IN ('failed', 'unknown') GROUP BY 1 ORDER BY 2 DESC, 1"
        )
        return dict(rows.fetchall())

    def undoable(self, action: str) -> pl.DataFrame:
        """(user_id, state, account_enabled before the run) of the steps of ``action`` that
        Graph applied or may have applied."""
        import polars as pl

        rows = self._conn.execute(
            f"SELECT user_id, state, account_enabled FROM (SELECT s.user_id, {EFFECTIVE_STATE} "
            "AS state, u.account_enabled, s.rowid AS r FROM steps s JOIN users u USING "
            f"(user_id) WHERE s.action = ?) WHERE state IN ({_IN_UNDOABLE}) ORDER BY r",
            (action,),
        ).fetchall()
        schema = {"user_id": pl.String, "state": pl.String, "account_enabled": pl.Boolean}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def in_doubt(self, action: str) -> list[str]:
        """The users whose step of ``action`` is unknown (Graph may have applied it)."""
        rows = self._conn.execute(
            f"SELECT user_id FROM (SELECT s.user_id, {EFFECTIVE_STATE} AS state FROM steps s "
            "WHERE s.action = ?) WHERE state = 'unknown'",
            (action,),
        )
        return [str(r[0]) for r in rows.fetchall()]

    def already(self, action: str) -> set[str]:
        """The users that already read as ``action`` leaves them before the run."""
        rows = self._conn.execute("SELECT user_id FROM before WHERE action = ?", (action,))
        return {str(r[0]) for r in rows.fetchall()}

    def guarded(self) -> pl.DataFrame:
        """(user_id, verdict, why, roles) of the users the guards kept from some or all
        actions (protected, held_back), as the latest run decided."""
        import polars as pl

        rows = self._conn.execute(
            "SELECT user_id, verdict, why, roles FROM guarded ORDER BY rowid"
        ).fetchall()
        schema = {n: pl.String for n in ("user_id", "verdict", "why", "roles")}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def batch_states(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT state, COUNT(*) FROM batches GROUP BY state")
        return dict(rows.fetchall())

    def done(self, action: str, since: str | None = None) -> pl.DataFrame:
        """(user_id, sent_at, finished_at) of the steps of ``action`` done (since a moment)."""
        import polars as pl

        sql = "SELECT user_id, sent_at, finished_at FROM steps WHERE action = ? AND state = 'done'"
        params = [action]
        if since is not None:
            sql += " AND finished_at >= ?"
            params.append(since)
        rows = self._conn.execute(sql + " ORDER BY rowid", params).fetchall()
        schema = {"user_id": pl.String, "sent_at": pl.String, "finished_at": pl.String}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def applied(self, action: str) -> pl.DataFrame:
        """(user_id, sent_at, state) of the steps of ``action`` that Graph applied or may have
        applied (done, unknown): what verify reads back, the ones in doubt included."""
        import polars as pl

        rows = self._conn.execute(
            f"SELECT user_id, sent_at, state FROM (SELECT s.user_id, s.sent_at, "
            f"{self._state(self.live)} AS state, s.rowid AS r FROM steps s WHERE s.action = ?) "
            f"WHERE state IN ({_IN_UNDOABLE}) ORDER BY r",
            (action,),
        ).fetchall()
        schema = {"user_id": pl.String, "sent_at": pl.String, "state": pl.String}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def report(self, keys: Iterable[tuple[str, str]] | None = None) -> pl.DataFrame:
        """One row per user per action with its state and the last answer Graph gave for it;
        only the (user_id, action) ``keys`` when given, in their order. ``input_value`` lists
        every input value that led to the user (an object ID, then the UPNs and addresses
        looked up)."""
        import polars as pl

        select = (
            f"SELECT s.rowid, s.user_id, s.action, {self._state(self.live)}, s.attempts, "
            "s.last_status, s.error_code, s.error_message, s.request_id, s.client_request_id, "
            "s.sent_at, s.finished_at FROM steps s"
        )
        if keys is None:
            rows = self._conn.execute(select).fetchall()
        else:
            rows = []
            for key in keys:
                rows += self._conn.execute(select + " WHERE s.user_id = ? AND s.action = ?", key)
        steps = pl.DataFrame(rows, schema=_schemas()["step"], orient="row")
        users = self._users_of(None if keys is None else steps.get_column("user_id").unique())
        frame = steps.join(users, on="user_id", how="left", maintain_order="left")
        if keys is None:  # the ledger's order; the keys' own order otherwise
            frame = frame.sort("user_row", "step_row")
        return frame.with_columns(input_value=self._input_values(frame)).select(
            list(_schemas()["REPORT_COLUMNS"])
        )

    def _users_of(self, user_ids: pl.Series | None) -> pl.DataFrame:
        import polars as pl

        select = (
            "SELECT rowid, user_id, input_value, matched_by, source_file, source_row FROM users"
        )
        if user_ids is None:
            rows = self._conn.execute(select).fetchall()
        else:
            rows = []
            for uid in user_ids:
                rows += self._conn.execute(select + " WHERE user_id = ?", (uid,)).fetchall()
        return pl.DataFrame(rows, schema=_schemas()["user"], orient="row")

    def _input_values(self, frame: pl.DataFrame) -> pl.Expr:
        """The user's first input value, then the other values looked up that led to them."""
        import polars as pl

        rows = self._conn.execute(
            "SELECT user_id, input_value FROM lookups WHERE outcome IN ('resolved', 'guest') "
            "ORDER BY rowid"
        ).fetchall()
        if not rows:
            return pl.col("input_value")
        looked = pl.DataFrame(rows, schema={"user_id": pl.String, "other": pl.String}, orient="row")
        others = (
            looked.join(frame.select("user_id", "input_value").unique("user_id"), on="user_id")
            .filter(pl.col("other") != pl.col("input_value").fill_null(""))
            .group_by("user_id", maintain_order=True)
            .agg(pl.col("other").str.join("; "))
        )
        extra = frame.select("user_id").join(
            others, on="user_id", how="left", maintain_order="left"
        )
        tail = pl.lit(extra.get_column("other"))
        return (
            pl.when(tail.is_null())
            .then(pl.col("input_value"))
            .otherwise(pl.concat_str(pl.col("input_value"), pl.lit("; "), tail))
        )

    def lookups(self) -> pl.DataFrame:
        """Every identity looked up for this ledger, with its outcome."""
        import polars as pl

        rows = self._conn.execute(
            f"SELECT {', '.join(_schemas()['LOOKUP_COLUMNS'])} FROM lookups ORDER BY rowid"
        ).fetchall()
        return pl.DataFrame(rows, schema=_schemas()["LOOKUP_COLUMNS"], orient="row")

    def lookup_outcomes(self) -> dict[str, int]:
        """How many identities had each look-up outcome."""
        rows = self._conn.execute("SELECT outcome, COUNT(*) FROM lookups GROUP BY 1 ORDER BY 1")
        return dict(rows.fetchall())

    def attempt_times(self) -> pl.DataFrame:
        """(started_at, action, outcome) of every request sent for this ledger's steps: the
        HTML report's timeline (outcome null: no answer was recorded, e.g. a kill). A JSON
        batch of per-user requests names no action: one of its steps' (they share a budget)."""
        import polars as pl

        rows = self._conn.execute(
            "SELECT a.started_at, COALESCE(b.action, (SELECT s.action FROM steps s "
            "WHERE s.batch_id = a.batch_id LIMIT 1)), a.outcome FROM attempts a "
            "JOIN batches b USING (batch_id) ORDER BY a.attempt_id"
        ).fetchall()
        schema = {"started_at": pl.String, "action": pl.String, "outcome": pl.String}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def before_images(self) -> pl.DataFrame:
        """(user_id, before): what was read of each user before the run acted (the account
        enabled or not, and per action what it already was), as one line of text."""
        import polars as pl

        rows = self._conn.execute(
            "SELECT u.user_id, CASE u.account_enabled WHEN 1 THEN 'accountEnabled: true' "
            "WHEN 0 THEN 'accountEnabled: false' END, (SELECT group_concat(b.action || ': ' || "
            "COALESCE(b.value, '?'), '; ') FROM before b WHERE b.user_id = u.user_id) "
            "FROM users u ORDER BY u.rowid"
        ).fetchall()
        said = [(uid, "; ".join(p for p in parts if p) or None) for uid, *parts in rows]
        return pl.DataFrame(said, schema={"user_id": pl.String, "before": pl.String}, orient="row")

    def runs(self) -> list[dict[str, object]]:
        cur = self._conn.execute("SELECT * FROM runs ORDER BY run_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def last_run(self) -> dict[str, object] | None:
        runs = self.runs()
        if not runs:
            return None
        last = runs[-1]
        last["outcome"] = json.loads(str(last["outcome"])) if last.get("outcome") else None
        return last
