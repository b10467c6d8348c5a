"""What each source read straight from Graph returned, kept so a resume acts on the same users."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batcher.ledger.states import now
from batcher.ledger.store import Store

if TYPE_CHECKING:
    import polars as pl

    SNAPSHOT_COLUMNS: dict[str, type[pl.DataType]]  # a source row's columns and their types


def _snapshot_columns() -> dict[str, type[pl.DataType]]:
    import polars as pl

    return {
        "source": pl.String,
        "input_value": pl.String,
        "kind": pl.String,
        "source_file": pl.String,
        "source_row": pl.Int64,
        "evidence": pl.String,
    }


def __getattr__(name: str) -> dict[str, type[pl.DataType]]:
    if name == "SNAPSHOT_COLUMNS":  # built on first use: a command reading no frame needs no polars
        return _snapshot_columns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


READ_KEY = "source_read:"  # meta: when each source's snapshot was read


class Snapshots(Store):
    """The ``source_rows`` table: one snapshot per source (e.g. "incident 42")."""

    def source_rows(self) -> pl.DataFrame:
        """Every source's rows (SNAPSHOT_COLUMNS) as read, in order, and when read."""
        import polars as pl

        rows = self._conn.execute(
            "SELECT source, input_value, kind, source_file, source_row, evidence FROM "
            "source_rows ORDER BY rowid"
        ).fetchall()
        return pl.DataFrame(rows, schema=_snapshot_columns(), orient="row")

    def sources_read(self) -> dict[str, str]:
        """Each source with a snapshot, and when it was read."""
        meta = self._conn.execute("SELECT key, value FROM meta WHERE key LIKE 'source_read:%'")
        return {key.removeprefix(READ_KEY): value for key, value in meta}

    def keep_sources(self, rows: pl.DataFrame, sources: list[str]) -> None:
        """Replace the snapshots of ``sources`` by ``rows`` (a source that returned nothing
        keeps an empty snapshot: no row, but it is not read again)."""
        stamp = now()
        with self._write() as db:
            db.executemany("DELETE FROM source_rows WHERE source = ?", [(s,) for s in sources])
            db.executemany(
                "INSERT INTO source_rows (source, input_value, kind, source_file, source_row, "
                "evidence, read_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((*row, stamp) for row in rows.select(*_snapshot_columns()).iter_rows()),
            )
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(READ_KEY + s, stamp) for s in sources],
            )
