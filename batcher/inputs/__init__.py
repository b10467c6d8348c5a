"""Read ID exports, pick the ID column, normalise, validate and de-duplicate the IDs.

Every input row ends up exactly once as valid (first occurrence of a user ID across all files),
duplicate, or invalid (with a reason). Formats live in formats (text) and structured (JSON,
Parquet, Excel), column choice in columns, value rules in values; this module does the accounting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from batcher.errors import InputError
from batcher.inputs.columns import ID_ALIASES, NON_USER_COLUMNS, header_key, pick_column
from batcher.inputs.formats import open_table
from batcher.inputs.values import (
    GUID_PATTERN,
    NIL_GUID,
    REASON_EMPTY,
    REASON_INSIDE,
    REASON_NIL,
    REASON_NOT_GUID,
    REASON_UPN,
    fast_key,
    guid_key,
    normalise,
    rejection_reason,
)

__all__ = [
    "GUID_PATTERN",
    "ID_ALIASES",
    "NIL_GUID",
    "NON_USER_COLUMNS",
    "REASON_EMPTY",
    "REASON_INSIDE",
    "REASON_NIL",
    "REASON_NOT_GUID",
    "REASON_UPN",
    "SOURCE_CAPS",
    "FileSummary",
    "InputSet",
    "header_key",
    "normalise",
    "pick_column",
    "read_inputs",
    "rejection_reason",
]

# Row counts at which known sources cut an export short.
SOURCE_CAPS = {
    2_500: "the Entra admin center's risky-users download",
    30_000: "a Defender advanced-hunting export",
    100_000: "the advanced-hunting API",
}


@dataclass(frozen=True)
class FileSummary:
    """What one input file contributed."""

    path: Path
    rows: int
    column: str
    column_reason: str
    valid: int
    duplicates: int
    invalid: int
    format: str = ""  # how the file was read, e.g. "CSV (semicolon-separated, Windows-1252)"


@dataclass(frozen=True)
class InputSet:
    """Unique valid IDs in first-seen order, every rejected row, and per-file counts."""

    ids: pl.DataFrame  # user_id, source_file, source_row
    rejects: pl.DataFrame  # source_file, source_row, raw_value, reason
    files: tuple[FileSummary, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def valid(self) -> int:
        return self.ids.height

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def invalid(self) -> int:
        return self.rejects.height


@dataclass(frozen=True)
class _Pick:
    path: Path
    column: str
    reason: str
    kind: str
    rows: int


def read_inputs(paths: Sequence[Path], column: str | None = None) -> InputSet:
    """Read every file, then validate and de-duplicate across all of them (first one wins)."""
    if not paths:
        raise InputError("no input file given; pass one or more files: batcher run FILE")
    seen: set[Path] = set()
    picks: list[_Pick] = []
    raws: list[pl.Series] = []
    keys: list[pl.Series] = []  # fast_key() of each raw value
    warnings: list[str] = []
    for path in paths:
        if path.resolve() in seen:
            raise InputError(f"{path}: given twice; pass each file once")
        seen.add(path.resolve())
        table = open_table(path)
        if table.sample.width == 0 and table.hidden:
            raise InputError(
                f"{path}: holds no columns of single values (only lists or objects); "
                "name a field inside them with --column, e.g. --column 'properties.AccountObjectId'"
            )
        if table.sample.height == 0:
            raise InputError(f"{path}: holds no rows of data; export the user IDs again")
        name, reason = pick_column(path, table.sample, column, table.header_less, table.hidden)
        if table.load_keyed is not None:
            keyed = table.load_keyed(name, fast_key)
            raw, key = keyed.get_column("raw"), keyed.get_column("key")
        else:
            raw = table.load(name).cast(pl.String).rename("raw")
            key = raw.to_frame().lazy().select(fast_key(pl.col("raw"))).collect().to_series()
        picks.append(_Pick(path, name, reason, table.kind, raw.len()))
        raws.append(raw)
        keys.append(key)
        warnings += table.notes
    ids, rejects = _validate(pl.concat(raws, rechunk=False), pl.concat(keys, rechunk=False))
    del raws, keys
    starts = [0]
    for pick in picks:
        starts.append(starts[-1] + pick.rows)
    files = []
    for n, pick in enumerate(picks):
        valid = _between(ids.get_column("pos"), starts[n], starts[n + 1])
        invalid = _between(rejects.get_column("pos"), starts[n], starts[n + 1])
        files.append(_summary(pick, valid, invalid, warnings))
    return InputSet(
        ids=_located(ids, picks, starts).select("user_id", "source_file", "source_row"),
        rejects=_located(rejects, picks, starts).select(
            "source_file", "source_row", "raw_value", "reason"
        ),
        files=tuple(files),
        warnings=tuple(warnings),
    )


def _validate(raw: pl.Series, keys: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """First occurrences (pos, user_id) and rejects (pos, raw_value, reason), in input order.

    Clean values take the fast path: ``keys`` holds their 128-bit key, read straight from the
    raw text (fast_key). Only the rest go through normalise(); de-duplication is on the exact
    key, never on a hash.
    """
    rows = raw.rename("raw").to_frame()
    slow = (
        rows.with_row_index("pos")
        .filter(keys.is_null())
        .with_columns(user_id=normalise(pl.col("raw")))
        .with_columns(reason=rejection_reason(pl.col("raw"), pl.col("user_id")))
    )
    rejects = slow.filter(pl.col("reason").is_not_null()).select(
        "pos", pl.col("raw").alias("raw_value"), "reason"
    )
    cleaned = slow.filter(pl.col("reason").is_null()).select(
        "pos", "user_id", guid_key(pl.col("user_id")).alias("key")
    )
    if cleaned.height:
        keys = keys.scatter(cleaned.get_column("pos"), cleaned.get_column("key"))
    # arg_unique gives each key's first index; on a column without nulls it is fastest
    present = keys.is_not_null().arg_true()
    firsts = present.gather(keys.gather(present).arg_unique().sort())
    first = pl.repeat(False, raw.len(), eager=True).scatter(firsts, True)
    ids = (
        rows.lazy()
        .with_row_index("pos")
        .filter(first)
        .select("pos", pl.col("raw").str.to_lowercase().alias("user_id"))
        .collect()
    )
    if cleaned.height:
        ids = ids.join(
            cleaned.select("pos", pl.col("user_id").alias("cleaned")),
            on="pos",
            how="left",
            maintain_order="left",
        ).select("pos", pl.coalesce("cleaned", "user_id").alias("user_id"))
    return ids, rejects


def _between(positions: pl.Series, start: int, end: int) -> int:
    """How many of the ascending ``positions`` fall in [start, end)."""
    bounds = positions.search_sorted(pl.Series([start, end], dtype=positions.dtype), side="left")
    return int(bounds[1] - bounds[0])


def _located(frame: pl.DataFrame, picks: list[_Pick], starts: list[int]) -> pl.DataFrame:
    """Add source_file and source_row (data rows from 1) to a frame with global positions."""
    pos = pl.col("pos").cast(pl.Int64)
    if len(picks) == 1:
        return frame.with_columns(source_file=pl.lit(str(picks[0].path)), source_row=pos + 1)
    ends = pl.Series(starts[1:], dtype=pl.Int64)
    index = pl.lit(ends).search_sorted(pos, side="right")
    names = pl.lit(pl.Series([str(p.path) for p in picks]))
    return frame.with_columns(
        source_file=names.gather(index),
        source_row=pos - pl.lit(pl.Series(starts[:-1], dtype=pl.Int64)).gather(index) + 1,
    )


def _summary(pick: _Pick, valid: int, invalid: int, warnings: list[str]) -> FileSummary:
    path, rows = pick.path, pick.rows
    if rows and invalid == rows:
        raise InputError(
            f"{path}: column {pick.column!r} holds no valid user ID in {rows} rows; "
            "check the file is the right export or pick the column with --column NAME"
        )
    if rows in SOURCE_CAPS:
        warnings.append(
            f"{path}: exactly {rows:,} rows, the cap of {SOURCE_CAPS[rows]}; "
            "the export was probably cut short"
        )
    if invalid * 2 > rows:
        warnings.append(
            f"{path}: {invalid:,} of {rows:,} values in column {pick.column!r} are not valid IDs; "
            "check it is the ID column (see the rejects file) or name it with --column NAME"
        )
    return FileSummary(
        path=path,
        rows=rows,
        column=pick.column,
        column_reason=pick.reason,
        valid=valid,
        duplicates=rows - valid - invalid,
        invalid=invalid,
        format=pick.kind,
    )
