"""What a run found out and keeps: look-up outcomes, the state before it acted, the guards'
verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from batcher.ledger import reads
from batcher.ledger.states import now
from batcher.ledger.store import Store

if TYPE_CHECKING:
    import polars as pl


class Found(Store):
    """Facts a run records beside its steps (each write one transaction)."""

    def record_lookups(self, outcomes: pl.DataFrame) -> None:
        """Cache look-up outcomes (LOOKUP_COLUMNS), so a resume does not look them up again."""
        if outcomes.height == 0:
            return
        columns = list(reads.LOOKUP_COLUMNS)
        stamp = now()
        with self._write() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO lookups ({', '.join(columns)}, looked_up_at) "
                f"VALUES ({', '.join('?' * len(columns))}, ?)",
                ((*row, stamp) for row in frame_columns(outcomes, columns).iter_rows()),
            )

    def record_before(self, action: str, user_ids: Sequence[str], value: str) -> None:
        """Record that these users already read ``value`` (what ``action`` leaves) before the
        run: an undo leaves them so. A fact first recorded is kept."""
        if not user_ids:
            return
        stamp = now()
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO before (user_id, action, value, read_at) "
                "VALUES (?, ?, ?, ?)",
                ((uid, action, value, stamp) for uid in user_ids),
            )

    def record_guarded(self, verdicts: pl.DataFrame) -> None:
        """Record this run's verdicts (user_id, verdict, why, roles): protected or held back;
        a user acted on in full now (act) is no longer guarded."""
        rows = list(verdicts.select("user_id", "verdict", "why", "roles").iter_rows())
        with self._write() as db:
            db.executemany("DELETE FROM guarded WHERE user_id = ?", ((r[0],) for r in rows))
            db.executemany(
                "INSERT INTO guarded (user_id, verdict, why, roles, decided_at) "
                "VALUES (?, ?, ?, ?, ?)",
                ((u, v, w or "", r, now()) for u, v, w, r in rows if v != "act"),
            )


def frame_columns(frame: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """``frame``'s ``columns`` in that order, null where ``frame`` lacks one."""
    import polars as pl

    return frame.select(
        [pl.col(c) if c in frame.columns else pl.lit(None).alias(c) for c in columns]
    )
