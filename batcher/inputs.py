"""Read ID exports, pick the ID column, normalise, validate and de-duplicate the IDs."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from batcher.errors import InputError

GUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
NIL_GUID = "00000000-0000-0000-0000-000000000000"
# Characters trimmed from both ends of a value: whitespace, invisible marks, quotes, brackets.
_EDGE_CHARS = " \t\r\n\v\f\u00a0\u2007\u202f\u3000\u200b\u200c\u200d\u2060\ufeff\"'`{}()"
_HEX32 = r"^([0-9a-f]{8})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{12})$"

# Header aliases for the user ID column, best first (headers are compared normalised).
ID_ALIASES: tuple[str, ...] = (
    "userid",
    "objectid",
    "userobjectid",
    "accountobjectid",
    "aaduserid",
    "azureaduserid",
    "entrauserid",
    "targetuserid",
    "id",
)
# GUID columns that never hold user IDs.
NON_USER_COLUMNS = frozenset(
    {
        "tenantid",
        "aadtenantid",
        "correlationid",
        "reportid",
        "appid",
        "applicationid",
        "clientappid",
        "requestid",
        "operationid",
        "deviceid",
        "sessionid",
        "resourceid",
        "resourcetenantid",
        "hometenantid",
        "subscriptionid",
        "workspaceid",
        "serviceprincipalid",
        "riskeventid",
        "detectionid",
        "alertid",
        "incidentid",
    }
)
# Row counts at which known sources cut an export short.
SOURCE_CAPS = {
    2_500: "the Entra admin center's risky-users download",
    30_000: "a Defender advanced-hunting export",
    100_000: "the advanced-hunting API",
}
_SNIFF_BYTES = 64 * 1024
_SAMPLE_ROWS = 1_000

REASON_EMPTY = "empty value"
REASON_UPN = "looks like a UPN or e-mail address, not an object ID; resolve it to the object ID"
REASON_NIL = "nil GUID (all zeros) is not a user"
REASON_NOT_GUID = "not a GUID"


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


def normalise(expr: pl.Expr) -> pl.Expr:
    """Clean a column of raw values into lower-case hyphenated GUID text (not yet validated)."""
    cleaned = (
        expr.str.strip_chars(_EDGE_CHARS)
        .str.to_lowercase()
        .str.replace(r"^urn:uuid:", "")
        .str.strip_chars(_EDGE_CHARS)
    )
    return cleaned.str.replace(_HEX32, "${1}-${2}-${3}-${4}-${5}")


def rejection_reason(raw: pl.Expr, cleaned: pl.Expr) -> pl.Expr:
    """Why a raw value is not a usable user ID, or null when it is."""
    return (
        pl.when(raw.is_null() | (cleaned == ""))
        .then(pl.lit(REASON_EMPTY))
        .when(cleaned.str.contains("@", literal=True))
        .then(pl.lit(REASON_UPN))
        .when(cleaned == NIL_GUID)
        .then(pl.lit(REASON_NIL))
        .when(~cleaned.str.contains(GUID_PATTERN))
        .then(pl.lit(REASON_NOT_GUID))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def read_inputs(paths: Sequence[Path], column: str | None = None) -> InputSet:
    """Read every file, then validate and de-duplicate across all of them (first one wins)."""
    if not paths:
        raise InputError("no input file given; pass one or more files: batcher run FILE")
    frames: list[pl.DataFrame] = []
    picks: list[tuple[Path, str, str]] = []
    for path in paths:
        raw, name, reason = _read_id_column(path, column)
        picks.append((path, name, reason))
        frames.append(
            pl.DataFrame({"raw_value": raw}).select(
                pl.lit(str(path)).alias("source_file"),
                pl.int_range(1, raw.len() + 1, dtype=pl.Int64).alias("source_row"),
                pl.col("raw_value"),
            )
        )
    rows = pl.concat(frames).lazy()
    checked = (
        rows.with_columns(normalise(pl.col("raw_value")).alias("user_id"))
        .with_columns(rejection_reason(pl.col("raw_value"), pl.col("user_id")).alias("reason"))
        .with_columns(
            (pl.col("reason").is_null() & pl.col("user_id").is_first_distinct()).alias("first"),
        )
        .collect()
    )
    valid_rows = checked.filter(pl.col("reason").is_null())
    ids = valid_rows.filter(pl.col("first")).select("user_id", "source_file", "source_row")
    rejects = checked.filter(pl.col("reason").is_not_null()).select(
        "source_file", "source_row", "raw_value", "reason"
    )
    per_file = (
        checked.group_by("source_file")
        .agg(
            pl.len().alias("rows"),
            pl.col("reason").is_not_null().sum().alias("invalid"),
            pl.col("first").sum().alias("valid"),
            (pl.col("reason").is_null() & ~pl.col("first")).sum().alias("duplicates"),
            pl.col("reason").is_null().sum().alias("well_formed"),
        )
        .rows_by_key("source_file", named=True, unique=True)
    )
    files: list[FileSummary] = []
    warnings: list[str] = []
    for path, name, reason in picks:
        counts = per_file.get(str(path), {"rows": 0, "invalid": 0, "valid": 0, "duplicates": 0})
        if counts["rows"] and not counts.get("well_formed"):
            raise InputError(
                f"{path}: column {name!r} holds no valid user ID in {counts['rows']} rows; "
                "check the file is the right export or pick the column with --column NAME"
            )
        if counts["rows"] in SOURCE_CAPS:
            warnings.append(
                f"{path}: exactly {counts['rows']:,} rows, the cap of "
                f"{SOURCE_CAPS[counts['rows']]}; the export was probably cut short"
            )
        files.append(
            FileSummary(
                path=path,
                rows=counts["rows"],
                column=name,
                column_reason=reason,
                valid=counts["valid"],
                duplicates=counts["duplicates"],
                invalid=counts["invalid"],
            )
        )
    return InputSet(ids=ids, rejects=rejects, files=tuple(files), warnings=tuple(warnings))


def header_key(name: str) -> str:
    """Normalise a header for alias matching: case, spaces, punctuation and a [UTC] suffix."""
    key = name.strip().lower()
    key = key.removesuffix("[utc]").strip()
    return "".join(ch for ch in key if ch.isalnum())


def _read_id_column(path: Path, column: str | None) -> tuple[pl.Series, str, str]:
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass the export file inside it")
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InputError(
            f"{path}: cannot be read ({exc.strerror}); check its permissions"
        ) from None
    if not head.strip():
        raise InputError(f"{path}: the file is empty; export the user IDs again")
    return _read_delimited(path, head, column)


def _decode(path: Path, head: bytes) -> tuple[str | None, bytes | None]:
    """Return (head text, whole file re-encoded as UTF-8 or None when it already is UTF-8)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = path.read_bytes().decode("utf-16")
        return text[:_SNIFF_BYTES], text.encode("utf-8")
    if b"\x00" in head:
        raise InputError(
            f"{path}: holds NUL bytes (binary, or UTF-16 without a byte-order mark); "
            "save it as UTF-8 CSV"
        )
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        return decoder.decode(head, final=False), None
    except UnicodeDecodeError:
        text = path.read_bytes().decode("cp1252", errors="replace")
        return text[:_SNIFF_BYTES], text.encode("utf-8")


def _read_delimited(path: Path, head: bytes, column: str | None) -> tuple[pl.Series, str, str]:
    text, converted = _decode(path, head)
    assert text is not None
    lines = text.splitlines()
    skip = 1 if lines and lines[0].lstrip("\ufeff").startswith("#TYPE") else 0
    header_line = lines[skip] if len(lines) > skip else ""
    separator = _sniff_separator(lines[skip : skip + 20])
    header = next(csv.reader([header_line.lstrip("\ufeff")], delimiter=separator), [])
    source: Path | io.BytesIO = io.BytesIO(converted) if converted is not None else path
    has_header = not (len(header) == 1 and _looks_like_id(header[0]))
    try:
        sample = pl.read_csv(
            source,
            separator=separator,
            skip_rows=skip,
            has_header=has_header,
            infer_schema=False,
            n_rows=_SAMPLE_ROWS,
        )
        if not has_header:
            name, reason = sample.columns[0], "header-less list: one ID per line"
        else:
            name, reason = pick_column(path, sample, column)
        if isinstance(source, io.BytesIO):
            source.seek(0)
        frame = pl.read_csv(
            source,
            separator=separator,
            skip_rows=skip,
            has_header=has_header,
            infer_schema=False,
            columns=[name],
        )
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{path}: cannot be parsed as a {_SEP_NAMES[separator]}-separated file ({first}); "
            "check the export or save it as CSV"
        ) from None
    return frame.get_column(name), name, reason


_SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _sniff_separator(lines: list[str]) -> str:
    """The candidate that splits the first lines into the same number (>1) of fields."""
    best, best_score = ",", 0
    for sep in _SEP_NAMES:
        counts = [len(next(csv.reader([ln], delimiter=sep), [])) for ln in lines if ln.strip()]
        if not counts or counts[0] < 2:
            continue
        steady = sum(1 for c in counts if c == counts[0])
        score = steady * 1000 + counts[0]
        if score > best_score:
            best, best_score = sep, score
    return best


def _looks_like_id(value: str) -> bool:
    series = pl.Series([value], dtype=pl.String)
    cleaned = pl.select(normalise(pl.lit(series))).to_series()
    return bool(cleaned.str.contains(GUID_PATTERN).item())


def pick_column(path: Path, sample: pl.DataFrame, column: str | None) -> tuple[str, str]:
    """Choose the ID column: --column, then a known alias, then the best GUID hit rate."""
    names = sample.columns
    if column is not None:
        for name in names:
            if name == column or header_key(name) == header_key(column):
                return name, "chosen with --column"
        raise InputError(f"{path}: no column named {column!r}; columns are: {', '.join(names)}")
    ranked = [(ID_ALIASES.index(header_key(n)), n) for n in names if header_key(n) in ID_ALIASES]
    if ranked:
        best = min(rank for rank, _ in ranked)
        winners = [n for rank, n in ranked if rank == best]
        if len(winners) > 1:
            raise _tie(path, winners, "share the same ID header")
        return winners[0], f"header {winners[0]!r} is a known user-ID column name"
    rates: list[tuple[float, str]] = []
    for name in names:
        if header_key(name) in NON_USER_COLUMNS:
            continue
        cleaned = sample.select(normalise(pl.col(name))).to_series().drop_nulls()
        if cleaned.len():
            hits = int(cleaned.str.contains(GUID_PATTERN).sum())
            rates.append((hits / cleaned.len(), name))
    rates = [r for r in rates if r[0] > 0]
    if not rates:
        raise InputError(
            f"{path}: found no column of user IDs among: {', '.join(names)}; "
            "name the column with --column NAME"
        )
    top = max(rate for rate, _ in rates)
    winners = [n for rate, n in rates if rate == top]
    if len(winners) > 1:
        raise _tie(path, winners, "hold GUIDs equally often")
    return winners[0], f"column {winners[0]!r} holds the most GUIDs ({top:.0%} of sampled rows)"


def _tie(path: Path, names: list[str], why: str) -> InputError:
    listed = ", ".join(repr(n) for n in names)
    return InputError(f"{path}: columns {listed} {why}; choose one with --column {names[0]!r}")
