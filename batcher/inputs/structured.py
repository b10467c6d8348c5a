"""Open structured inputs: JSON and NDJSON, Parquet, Excel workbooks and zip archives."""

from __future__ import annotations

import codecs
import io
import json
import zipfile
from pathlib import Path

import polars as pl

from batcher.errors import InputError
from batcher.inputs.table import Source, Table, first_line, in_memory, numbered, scalar_columns
from batcher.inputs.values import looks_like_id

_ENVELOPES = ("value", "records")
_PLAIN = "value"  # the column of a JSON array of plain values


def read_json(path: Path, source: Source, head: str, kind: str) -> Table:
    data = source.read_bytes() if isinstance(source, Path) else source
    data = data.removeprefix(codecs.BOM_UTF8)
    first = head.lstrip("\ufeff \t\r\n").split("\n", 1)[0]
    ndjson = first.startswith("{") and _parses(first) and bool(data.strip().count(b"\n"))
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
        notes.append(
            f"{path}: the Graph response has more pages (@odata.nextLink); only this page was "
            "read: fetch every page and pass them all"
        )
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


def read_excel(path: Path, source: Source, kind: str) -> Table:
    used = [(name, frame) for name, frame in _sheets(path, source, kind, True) if frame.width]
    if not used:
        raise InputError(f"{path}: every sheet of the workbook is empty; export the IDs again")
    name, frame = used[0]
    header_less = any(looks_like_id(column) for column in frame.columns)
    if header_less:  # the first row is data: read the sheet again without a header
        frame = dict(_sheets(path, source, kind, False))[name]
        frame.columns = numbered(frame.columns)
    filled = frame.select(pl.any_horizontal(pl.all().is_not_null() & (pl.all() != ""))).to_series()
    rows = filled.arg_true()  # trailing empty rows are formatting, not data
    frame = frame.head(int(rows[-1]) + 1 if rows.len() else 0)
    notes = tuple(
        f"{path}: read sheet {name!r} only; sheet {other!r} was not read" for other, _ in used[1:]
    )
    return in_memory(path, frame, f"{kind}, sheet {name!r}", notes, plain=header_less)


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


def read_zip(path: Path, source: Source, wrapper: str) -> Table:
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        raise InputError(f"{path}: is a damaged zip or Excel file; download it again") from None
    if "xl/workbook.xml" in names or "xl/workbook.bin" in names:
        return read_excel(path, source, f"{wrapper}Excel workbook")
    listed = ", ".join(repr(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
    raise InputError(
        f"{path}: is a zip archive (holding {listed}); extract the export from it and pass that"
    )
