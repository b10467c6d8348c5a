"""An opened input: a sample of every column as text, and loaders for any one of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
from polars.datatypes import DataTypeClass

from batcher.errors import InputError

SAMPLE_ROWS = 1_000
Source = Path | bytes


def source_bytes(source: Source) -> bytes:
    """The whole content of a source: the file's bytes, or the bytes already in memory."""
    return source.read_bytes() if isinstance(source, Path) else source


@dataclass(frozen=True)
class Table:
    """An input opened for reading: a sample of every column and a loader for any one of them."""

    path: Path
    kind: str  # how it was read, for messages: "CSV (semicolon-separated, Windows-1252)"
    sample: pl.DataFrame  # the first SAMPLE_ROWS rows, every column as String
    load: Callable[[str], pl.Series]  # every row of one column, as String
    header_less: bool = False
    hidden: tuple[str, ...] = ()  # columns holding lists, objects or bytes
    notes: tuple[str, ...] = ()  # warnings about the file itself
    # Where the reader can stream: one column as "raw" plus key(raw) as "key" in one pass.
    load_keyed: Callable[[str, Callable[[pl.Expr], pl.Expr]], pl.DataFrame] | None = None
    # The column and why, when the shape itself says where the IDs are (incident entities).
    fixed: tuple[str, str] | None = None
    # Incident entities: each loaded row's own row number, rows counted but not loaded (hosts,
    # IPs...), and a reason for rows that are invalid whatever their value (a user without one).
    rows_at: pl.Series | None = None
    skipped: int = 0
    preset: pl.Series | None = None
    # Workbooks: the other sheets and how to choose one, added to errors about the column.
    elsewhere: str = ""


def in_memory(
    path: Path, frame: pl.DataFrame, kind: str, notes: tuple[str, ...] = (), plain: bool = False
) -> Table:
    table = scalar_columns(path, frame.lazy(), frame.schema, kind, notes)
    return replace(table, header_less=plain)


def scalar_columns(
    path: Path, frame: pl.LazyFrame, schema: pl.Schema, kind: str, notes: tuple[str, ...] = ()
) -> Table:
    """Every scalar column as text, struct fields as dotted paths; lists and bytes are hidden."""
    exprs: dict[str, pl.Expr] = {}
    hidden: list[str] = []

    def walk(name: str, expr: pl.Expr, dtype: pl.DataType | DataTypeClass) -> None:
        if isinstance(dtype, pl.Struct):
            for field in dtype.fields:
                walk(f"{name}.{field.name}", expr.struct.field(field.name), field.dtype)
        elif dtype.is_nested() or isinstance(dtype, pl.Binary | pl.Object):
            hidden.append(name)
        else:
            exprs[name] = expr.cast(pl.String).alias(name)

    for name, dtype in schema.items():
        walk(name, pl.col(name), dtype)

    def load(name: str) -> pl.Series:
        try:
            return frame.select(exprs[name]).collect().to_series()
        except pl.exceptions.PolarsError as exc:
            raise InputError(f"{path}: cannot read column {name!r} ({first_line(exc)})") from None

    try:
        sample = frame.select(list(exprs.values())).head(SAMPLE_ROWS).collect()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot be read as {kind} ({first_line(exc)})") from None
    return Table(path, kind, sample, load, hidden=tuple(hidden), notes=notes)


def numbered(names: list[str]) -> list[str]:
    """Names for the columns of a file without a header row."""
    return [f"column_{n}" for n in range(1, len(names) + 1)]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
