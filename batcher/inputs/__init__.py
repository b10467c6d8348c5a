"""Read ID exports, pick the ID column, normalise, validate and de-duplicate the IDs.

Every input row ends up exactly once as valid (first occurrence of a user across all files),
duplicate, invalid (with a reason) or skipped (an incident entity that is not a user). Valid
values are object IDs (``ids``) or UPNs, e-mail addresses and on-premises SIDs (``identities``).
Formats live in formats (text) and structured (JSON, Parquet, Excel), incident entities in
entities, column choice in columns, value rules in values; this module does the accounting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from batcher.errors import InputError
from batcher.inputs.columns import header_key, pick_column
from batcher.inputs.formats import open_table
from batcher.inputs.table import Table
from batcher.inputs.values import (
    GUID,
    GUID_PATTERN,
    KIND_GUID,
    KIND_SID,
    KIND_UPN,
    NIL_GUID,
    REASON_EMPTY,
    REASON_INSIDE,
    REASON_NIL,
    REASON_NOT_GUID,
    REASON_NOT_ID,
    REASON_SEVERAL,
    REASON_SID,
    REASON_UPN,
    fast_key,
    guid_key,
    kind_of,
    normalise,
    rejection_reason,
)

__all__ = [
    "GUID",
    "GUID_PATTERN",
    "KIND_SID",
    "KIND_UPN",
    "NIL_GUID",
    "REASON_EMPTY",
    "REASON_INSIDE",
    "REASON_NIL",
    "REASON_NOT_GUID",
    "REASON_NOT_ID",
    "REASON_SEVERAL",
    "REASON_SID",
    "REASON_UPN",
    "SOURCE_CAPS",
    "FileSummary",
    "InputSet",
    "header_key",
    "kind_of",
    "no_identities",
    "normalise",
    "open_table",
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
_IDENTITY_SCHEMA = {
    "input_value": pl.String,
    "kind": pl.String,
    "source_file": pl.String,
    "source_row": pl.Int64,
}


def no_identities() -> pl.DataFrame:
    """An empty ``InputSet.identities`` frame, with its schema."""
    return pl.DataFrame(schema=_IDENTITY_SCHEMA)


@dataclass(frozen=True)
class FileSummary:
    """What one input file contributed: rows = valid + duplicates + invalid + skipped."""

    path: Path
    rows: int
    column: str
    column_reason: str
    valid: int
    duplicates: int
    invalid: int
    format: str = ""  # how the file was read, e.g. "CSV (semicolon-separated, Windows-1252)"
    skipped: int = 0  # incident entities that are not users (hosts, IPs, files...)


@dataclass(frozen=True)
class InputSet:
    """Unique valid users in first-seen order, every rejected row, and per-file counts."""

    ids: pl.DataFrame  # user_id (lower-case hyphenated GUID), source_file, source_row
    # input_value (normalised), kind ("upn" | "sid"), source_file, source_row; keyword-only
    # with an empty default, so a set of object IDs alone (an undo) needs no identities
    identities: pl.DataFrame = field(default_factory=no_identities, kw_only=True)
    rejects: pl.DataFrame  # source_file, source_row, raw_value, reason
    files: tuple[FileSummary, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def valid(self) -> int:
        return self.ids.height + self.identities.height

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def invalid(self) -> int:
        return self.rejects.height

    @property
    def skipped(self) -> int:
        return sum(f.skipped for f in self.files)


@dataclass(frozen=True)
class _Pick:
    """What the accounting needs of a file once its column is read (not the file's data)."""

    path: Path
    column: str
    reason: str
    kind: str
    rows: int  # values read (skipped entities are not among them)
    skipped: int = 0
    rows_at: pl.Series | None = None  # each value's own row number (incident entities)
    preset: pl.Series | None = None  # reasons for values invalid whatever they hold
    elsewhere: str = ""  # a workbook's other sheets, for errors


def read_inputs(
    paths: Sequence[Path], column: str | None = None, sheet: str | None = None
) -> InputSet:
    """Read every file, then validate and de-duplicate across all of them (first one wins).

    ``column`` is the operator's --column (for every file); ``sheet`` the sheet of a workbook.
    """
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
        table = open_table(path, column, sheet)
        raw, key, pick = _read(table, column)
        picks.append(pick)
        raws.append(raw)
        keys.append(key)
        warnings += table.notes
    ids, identities, rejects = _validate(
        pl.concat(raws, rechunk=False), pl.concat(keys, rechunk=False), _presets(picks)
    )
    del raws, keys
    starts = [0]
    for pick in picks:
        starts.append(starts[-1] + pick.rows)
    files = []
    for n, pick in enumerate(picks):
        valid = _between(ids.get_column("pos"), starts[n], starts[n + 1])
        valid += _between(identities.get_column("pos"), starts[n], starts[n + 1])
        invalid = _between(rejects.get_column("pos"), starts[n], starts[n + 1])
        files.append(_summary(pick, valid, invalid, warnings))
    identities = _located(identities, picks, starts).select(*_IDENTITY_SCHEMA)
    return InputSet(
        ids=_located(ids, picks, starts).select("user_id", "source_file", "source_row"),
        identities=identities.cast(_IDENTITY_SCHEMA),  # type: ignore[arg-type]
        rejects=_located(rejects, picks, starts).select(
            "source_file", "source_row", "raw_value", "reason"
        ),
        files=tuple(files),
        warnings=tuple(warnings),
    )


def _read(table: Table, column: str | None) -> tuple[pl.Series, pl.Series, _Pick]:
    """The chosen column of one file, raw and keyed, and how it was chosen."""
    path = table.path
    if table.sample.width == 0 and table.hidden:
        raise InputError(
            f"{path}: holds no columns of single values (only lists or objects); "
            "name a field inside them with --column, e.g. --column 'properties.AccountObjectId'"
        )
    if table.sample.height == 0:
        raise _noted(InputError(f"{path}: holds no rows of data; export the user IDs again"), table)
    if table.fixed is not None:
        name, reason = table.fixed
    else:
        try:
            name, reason = pick_column(path, table.sample, column, table.header_less, table.hidden)
        except InputError as exc:
            raise _noted(exc, table) from None
    if table.load_keyed is not None:
        keyed = table.load_keyed(name, fast_key)
        raw, key = keyed.get_column("raw"), keyed.get_column("key")
    else:
        raw = table.load(name).cast(pl.String).rename("raw")
        key = raw.to_frame().lazy().select(fast_key(pl.col("raw"))).collect().to_series()
    pick = _Pick(path, name, reason, table.kind, raw.len(), table.skipped, table.rows_at)
    return raw, key, replace(pick, preset=table.preset, elsewhere=table.elsewhere)


def _noted(exc: InputError, where: Table | _Pick) -> InputError:
    """The error with the workbook's other sheets and how to choose one, when there are some."""
    return InputError(f"{exc}; {where.elsewhere}") if where.elsewhere else exc


def _presets(picks: list[_Pick]) -> pl.Series | None:
    """Every file's preset reasons end to end (null where none), or None when no file has any."""
    if all(p.preset is None for p in picks):
        return None
    empty = pl.Series(dtype=pl.String)
    return pl.concat(
        [p.preset if p.preset is not None else empty.extend_constant(None, p.rows) for p in picks]
    )


def _validate(
    raw: pl.Series, keys: pl.Series, preset: pl.Series | None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """First occurrences of object IDs (pos, user_id) and of UPNs and SIDs (pos, input_value,
    kind), and rejects (pos, raw_value, reason), each in input order.

    Clean object IDs take the fast path: ``keys`` holds their 128-bit key, read straight from
    the raw text (fast_key). Only the rest are normalised and classified; object IDs are
    de-duplicated on the exact key (never a hash), UPNs and SIDs on their normalised text.
    ``preset`` holds reasons for rows that are invalid whatever they hold.
    """
    rows = raw.rename("raw").to_frame()
    slow = (
        rows.with_row_index("pos")
        .filter(keys.is_null())
        .with_columns(cleaned=normalise(pl.col("raw")))
        .with_columns(kind=kind_of(pl.col("cleaned")))
    )
    bad = slow.filter(pl.col("kind").is_null()).with_columns(
        reason=rejection_reason(pl.col("raw"), pl.col("cleaned"))
    )
    if preset is not None:
        bad = bad.with_columns(reason=pl.coalesce(preset.gather(bad.get_column("pos")), "reason"))
    rejects = bad.select("pos", pl.col("raw").alias("raw_value"), "reason")
    identities = (
        slow.filter(pl.col("kind").is_in([KIND_UPN, KIND_SID]))
        .select("pos", pl.col("cleaned").alias("input_value"), "kind")
        .unique(subset="input_value", keep="first", maintain_order=True)
    )
    cleaned = slow.filter(pl.col("kind") == KIND_GUID).select(
        "pos", "cleaned", guid_key(pl.col("cleaned")).alias("key")
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
            cleaned.select("pos", "cleaned"), on="pos", how="left", maintain_order="left"
        ).select("pos", pl.coalesce("cleaned", "user_id").alias("user_id"))
    return ids, identities, rejects


def _between(positions: pl.Series, start: int, end: int) -> int:
    """How many of the ascending ``positions`` fall in [start, end)."""
    bounds = positions.search_sorted(pl.Series([start, end], dtype=positions.dtype), side="left")
    return int(bounds[1] - bounds[0])


def _located(frame: pl.DataFrame, picks: list[_Pick], starts: list[int]) -> pl.DataFrame:
    """Add source_file and source_row (data rows from 1) to a frame with global positions."""
    pos = frame.get_column("pos").cast(pl.Int64)
    files: pl.Series | str
    first: pl.Series | int
    if len(picks) == 1:  # every position is the one file's own
        files, first = str(picks[0].path), 0
    else:  # the file that holds each position, found once for both columns
        index = pl.Series(starts[1:], dtype=pl.Int64).search_sorted(pos, side="right")
        files = pl.Series([str(p.path) for p in picks]).gather(index)
        first = pl.Series(starts[:-1], dtype=pl.Int64).gather(index)
    if any(p.rows_at is not None for p in picks):  # incident entities: rows of their own
        numbers = pl.concat(
            [
                p.rows_at
                if p.rows_at is not None
                else pl.int_range(1, p.rows + 1, dtype=pl.Int64, eager=True)
                for p in picks
            ]
        )
        rows = numbers.gather(pos)
    else:
        rows = pos - first + 1
    return frame.with_columns(source_row=rows, source_file=pl.lit(files))


def _summary(pick: _Pick, valid: int, invalid: int, warnings: list[str]) -> FileSummary:
    path, values, skipped = pick.path, pick.rows, pick.skipped
    if values and invalid == values:
        raise _noted(
            InputError(
                f"{path}: column {pick.column!r} holds no valid user ID, UPN, e-mail address or "
                f"SID in {values} rows; check the file is the right export or pick the column "
                "with --column NAME"
            ),
            pick,
        )
    if values in SOURCE_CAPS:
        warnings.append(
            f"{path}: exactly {values:,} rows, the cap of {SOURCE_CAPS[values]}; "
            "the export was probably cut short"
        )
    if invalid * 2 > values:
        warnings.append(
            f"{path}: {invalid:,} of {values:,} values in column {pick.column!r} are not valid "
            "IDs; the rejects file gives each one's row and reason; if another column holds "
            "the users, name it with --column NAME"
        )
    return FileSummary(
        path=path,
        rows=values + skipped,
        column=pick.column,
        column_reason=pick.reason,
        valid=valid,
        duplicates=values - valid - invalid,
        invalid=invalid,
        format=pick.kind,
        skipped=skipped,
    )
