"""Open structured inputs: JSON and NDJSON, Parquet, Excel workbooks and zip archives."""

from __future__ import annotations

import codecs
import functools
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import polars as pl

from batcher.errors import InputError
from batcher.inputs.columns import NoColumn, listed, pick_column
from batcher.inputs.entities import HINT, find_entities
from batcher.inputs.table import (
    Source,
    Table,
    first_line,
    in_memory,
    numbered,
    scalar_columns,
    source_bytes,
)
from batcher.inputs.values import looks_like_id

_ENVELOPES = ("value", "records", "entities")  # Graph pages, Azure exports, Sentinel entities
_PLAIN = "value"  # the column of a JSON array of plain values


def read_json(path: Path, source: Source, head: str, kind: str, entities: bool = True) -> Table:
    """A JSON document or NDJSON; with ``entities``, incident entity shapes are recognised."""
    data = source_bytes(source)
    data = data.removeprefix(codecs.BOM_UTF8)
    first = head.lstrip("\ufeff \t\r\n").split("\n", 1)[0]
    ndjson = first.startswith("{") and _parses(first) and bool(data.strip().count(b"\n"))
    if entities and not ndjson and HINT.search(head):
        table = _entity_table(path, data, kind)
        if table is not None:
            return table
    if ndjson:
        kind = kind.replace("JSON", "NDJSON", 1)
    try:
        if ndjson:
            frame = pl.read_ndjson(data, infer_schema_length=None)
        else:
            frame = pl.read_json(data, infer_schema_length=None)
    except pl.exceptions.PolarsError:
        frame = _json_by_python(path, data.decode("utf-8", errors="replace"), ndjson)
    if frame.columns == [_PLAIN]:
        return in_memory(path, frame, kind.replace("JSON", "JSON array of IDs", 1), plain=True)
    notes = []
    if (
        "@odata.nextLink" in frame.columns
        and frame.get_column("@odata.nextLink").drop_nulls().len()
    ):
        notes.append(_more_pages(path))
    for name in _ENVELOPES:
        others = [c for c in frame.columns if c != name]
        envelope = frame.height == 1 or all(c.startswith("@") for c in others)
        if name in frame.columns and isinstance(frame.schema[name], pl.List) and envelope:
            frame = frame.select(pl.col(name).explode())
            if isinstance(frame.schema[name], pl.Struct):
                frame = frame.unnest(name)
            kind = kind.replace("JSON", f'JSON {{"{name}": [...]}}', 1)
            break
    return in_memory(path, frame, kind, tuple(notes))


def _more_pages(path: Path) -> str:
    return (
        f"{path}: the Graph response has more pages (@odata.nextLink); only this page was "
        "read: fetch every page and pass them all"
    )


def _entity_table(path: Path, data: bytes, kind: str) -> Table | None:
    """Incident entities as one column of user values, or None when the JSON is not one."""
    try:
        document = json.loads(data)
    except ValueError:
        return None  # the generic reader says where the syntax error is
    found = find_entities(document)
    if found is None:
        return None
    if not found.values:
        others = ", ".join(f"{n} {what}" for what, n in found.skipped.most_common())
        raise InputError(
            f"{path}: {found.shape} without a user or mailbox entity (only {others}); "
            "pass the incident or alert that names the users"
        )
    notes: tuple[str, ...] = ()
    if isinstance(document, dict) and document.get("@odata.nextLink"):
        notes = (_more_pages(path),)
    frame = pl.DataFrame({found.column: found.values}, schema={found.column: pl.String})
    return replace(
        in_memory(path, frame, kind.replace("JSON (", f"{found.shape} (JSON, ", 1), notes),
        fixed=(found.column, found.reason),
        rows_at=pl.Series("row", found.rows, dtype=pl.Int64),
        skipped=found.skipped.total(),
        preset=pl.Series("reason", found.reasons, dtype=pl.String),
    )


def _parses(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _json_by_python(path: Path, text: str, ndjson: bool) -> pl.DataFrame:
    """The slow, exact reader: names the line of a syntax error; handles arrays of plain IDs."""
    try:
        if ndjson:
            records = []
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise InputError(
                            f"{path}: line {number} is not valid JSON ({exc.msg}); "
                            "fix or remove that line"
                        ) from None
            value: object = records
        else:
            value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "export it again"
        ) from None
    if not isinstance(value, list):
        value = [value]
    records = [v for v in value if isinstance(v, dict)]
    if len(records) == len(value):
        return pl.from_dicts(records, infer_schema_length=None, strict=False)
    if any(isinstance(v, dict | list) for v in value):
        raise InputError(f"{path}: mixes objects and plain values in one JSON array; export again")
    return pl.DataFrame({_PLAIN: [None if v is None else str(v) for v in value]})


# -- Parquet, Excel, zip ------------------------------------------------------------------------


def read_parquet(path: Path, source: Source, wrapper: str) -> Table:
    try:
        frame = pl.scan_parquet(source)
        schema = frame.collect_schema()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: is a damaged Parquet file ({first_line(exc)})") from None
    return scalar_columns(path, frame, schema, f"{wrapper}Parquet")


def read_excel(
    path: Path, source: Source, kind: str, column: str | None, sheet: str | None
) -> Table:
    """The sheet named ``sheet``, else the first sheet in which an ID column is found."""
    sheets = _sheets(path, source, kind, True)
    # Every sheet again without a header, read once if any sheet's first row holds IDs.
    plain = functools.cache(lambda: dict(_sheets(path, source, kind, False)))
    names = [name for name, _ in sheets]
    if sheet is not None:
        chosen = [n for n in names if n == sheet] or [
            n for n in names if n.casefold() == sheet.casefold()
        ]
        if not chosen:
            raise InputError(
                f"{path}: the workbook has no sheet named {sheet!r}; its sheets: {listed(names)}; "
                "choose one with --sheet NAME"
            )
        name = chosen[0]
        table = _sheet(path, kind, name, dict(sheets)[name], plain)
        if table.sample.width == 0:
            raise InputError(f"{path}: sheet {name!r} is empty; choose another with --sheet NAME")
        return replace(table, elsewhere=_elsewhere(names, name))
    used = [(name, frame) for name, frame in sheets if frame.width]
    if not used:
        raise InputError(f"{path}: every sheet of the workbook is empty; export the IDs again")
    tables = [(name, _sheet(path, kind, name, frame, plain)) for name, frame in used]
    name, found = next(((n, t) for n, t in tables if _has_id_column(t, column)), tables[0])
    read = [n for n, _ in used]
    before, after = read[: read.index(name)], read[read.index(name) + 1 :]
    notes = [f"{path}: read sheet {name!r} only; sheet {other!r} was not read" for other in after]
    if before:
        which = (
            f"sheet {before[0]!r} holds" if len(before) == 1 else f"sheets {listed(before)} hold"
        )
        notes.insert(0, f"{path}: {which} no ID column; read sheet {name!r} instead")
        found = replace(found, kind=f"{found.kind} (the first sheet with an ID column)")
    return replace(found, notes=tuple(notes), elsewhere=_elsewhere(names, name))


def _sheet(
    path: Path,
    kind: str,
    name: str,
    frame: pl.DataFrame,
    plain: Callable[[], dict[str, pl.DataFrame]],
) -> Table:
    """One sheet as a table: a header unless the first row holds IDs; no empty rows at the end.

    ``plain`` gives every sheet of the workbook read without a header (read once, then kept).
    """
    header_less = any(looks_like_id(column) for column in frame.columns)
    if header_less:  # the first row is data: take the sheet as read without a header
        frame = plain()[name].clone()  # a copy: renaming its columns leaves the kept one as is
        frame.columns = numbered(frame.columns)
    if frame.width:
        filled = frame.select(pl.any_horizontal(pl.all().is_not_null() & (pl.all() != "")))
        rows = filled.to_series().arg_true()  # trailing empty rows are formatting, not data
        frame = frame.head(int(rows[-1]) + 1 if rows.len() else 0)
    return in_memory(path, frame, f"{kind}, sheet {name!r}", plain=header_less)


def _has_id_column(table: Table, column: str | None) -> bool:
    if table.sample.height == 0:
        return False
    try:
        pick_column(table.path, table.sample, column, table.header_less, table.hidden)
    except NoColumn:
        return False
    except InputError:
        return True  # a tie between ID columns: the question is asked about this sheet
    return True


def _elsewhere(names: list[str], name: str) -> str:
    others = [n for n in names if n != name]
    if not others:
        return ""
    return f"the workbook's other sheets: {listed(others)}; choose one with --sheet NAME"


def _sheets(path: Path, source: Source, kind: str, header: bool) -> list[tuple[str, pl.DataFrame]]:
    try:
        sheets = pl.read_excel(
            source,
            sheet_id=0,
            has_header=header,
            infer_schema_length=0,
            drop_empty_rows=False,
            raise_if_empty=False,
        )
    except Exception as exc:  # fastexcel raises its own types for damaged or encrypted files
        raise InputError(
            f"{path}: cannot be read as {kind} ({first_line(exc)}); if it is password-protected "
            "or has a sensitivity label, open it in Excel and save it as CSV UTF-8"
        ) from None
    return list(sheets.items())


def read_zip(
    path: Path, source: Source, wrapper: str, column: str | None, sheet: str | None
) -> Table:
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        raise InputError(f"{path}: is a damaged zip or Excel file; download it again") from None
    if "xl/workbook.xml" in names or "xl/workbook.bin" in names:
        return read_excel(path, source, f"{wrapper}Excel workbook", column, sheet)
    shown = ", ".join(repr(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
    raise InputError(
        f"{path}: is a zip archive (holding {shown}); extract the export from it and pass that"
    )
