"""Open one input file whatever its shape: detect the format from its bytes, then read columns.

Text (CSV, TSV, pipe-separated, one-ID-per-line lists, pasted lists of IDs, PowerShell table
text) in UTF-8, UTF-8 with BOM, UTF-16 with or without BOM, or Windows-1252; JSON (incident
entities too), NDJSON, Parquet and Excel; gzip around any of them. Every column comes back as
text; nested JSON fields become dotted paths. Row numbers are data rows counted from 1 (a
header, a #TYPE line or a table rule is not a row); in a pasted list, each ID is a row.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import polars as pl

from batcher.errors import InputError
from batcher.inputs.structured import read_excel, read_json, read_parquet, read_zip
from batcher.inputs.table import (
    SAMPLE_ROWS,
    Source,
    Table,
    first_line,
    in_memory,
    numbered,
    source_bytes,
)
from batcher.inputs.values import GUID_INSIDE, kinds, looks_like_id

HEAD_BYTES = 256 * 1024
# A pasted list is often one line of any length: the csv module must read it whole, not stop at
# its default field limit of 128 KiB (about 3,700 IDs). 2**31 - 1 fits a C long on every OS.
csv.field_size_limit(2**31 - 1)
_SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_TABLE_RULE = re.compile(r"^ *-+( +-+)* *$")
_FOREIGN = {
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"SQLite format 3\x00": "an SQLite database (a batcher ledger?)",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive",
    b"Rar!": "a RAR archive",
    b"{\\rtf": "a Rich Text document",
}
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# One ID of a pasted list (Polars regex): "Name" <addr>, Name Surname <addr>, <addr>, or what
# lies between commas, semicolons and white space.
_TOKEN = (
    r'"[^"]*"\s*<[^<>]*>'
    r"|\p{L}[\p{L}'.\-]*(?:[ \t]+\p{L}[\p{L}'.\-]*)*[ \t]*<[^<>]*>"
    r"|<[^<>]*>"
    r"|[^,;\s]+"
)
_GAPS = {"commas": ",", "semicolons": ";", "spaces": " ", "tabs": "\t"}


def open_table(path: Path, column: str | None = None, sheet: str | None = None) -> Table:
    """Detect what ``path`` holds and open it; InputError with what to do when it can't be.

    ``column`` (the operator's --column) turns off the recognition of incident entities and
    says which column a workbook's sheet must have; ``sheet`` names a workbook's sheet.
    """
    table = _open(path, _head(path), None, "", column, sheet)
    if sheet is not None and "workbook" not in table.kind:
        raise InputError(
            f"{path}: --sheet applies to Excel workbooks only, and this file is {table.kind}; "
            "run again without --sheet"
        )
    return table


def _head(path: Path) -> bytes:
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass the export file inside it")
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise InputError(
            f"{path}: cannot be read ({exc.strerror}); check its permissions"
        ) from None
    if not head.strip():
        raise InputError(f"{path}: the file is empty; export the user IDs again")
    return head


def _open(
    path: Path, head: bytes, data: bytes | None, wrapper: str, column: str | None, sheet: str | None
) -> Table:
    """``data`` is the whole content when it is already in memory (decompressed)."""
    source: Source = path if data is None else data
    if head.startswith(b"\x1f\x8b") and not wrapper:
        data = _gunzip(path)
        return _open(path, data[:HEAD_BYTES], data, "gzip-compressed ", column, sheet)
    if head.startswith(b"PAR1"):
        return read_parquet(path, source, wrapper)
    if head.startswith(b"PK\x03\x04"):
        return read_zip(path, source, wrapper, column, sheet)
    if head.startswith(_OLE2):
        return read_excel(path, source, wrapper + "Excel 97-2003 workbook", column, sheet)
    for magic, what in _FOREIGN.items():
        if head.startswith(magic):
            raise InputError(f"{path}: is {what}, not an export of user IDs; pass the export file")
    text, encoding, source = _decode(path, head, data)
    start = text.lstrip("\ufeff \t\r\n")[:1]
    if start in ("[", "{") and _is_json(text):
        return read_json(path, source, text, f"{wrapper}JSON ({encoding})", column is None)
    return _text(path, source, text, wrapper, encoding)


def _gunzip(path: Path) -> bytes:
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: is a damaged gzip file ({exc}); download it again") from None
    if not data.strip():
        raise InputError(f"{path}: the compressed file is empty; export the user IDs again")
    return data


# -- text: encodings ----------------------------------------------------------------------------


def _decode(path: Path, head: bytes, data: bytes | None) -> tuple[str, str, Source]:
    """Head text, encoding name, and a UTF-8 source for Polars (the path when already UTF-8)."""
    whole = data is not None or len(head) < HEAD_BYTES

    def everything() -> bytes:
        return data if data is not None else path.read_bytes()

    for bom, name, codec in (
        (codecs.BOM_UTF16_LE, "UTF-16 LE", "utf-16-le"),
        (codecs.BOM_UTF16_BE, "UTF-16 BE", "utf-16-be"),
    ):
        if head.startswith(bom):
            text = _strict(path, everything()[2:], codec, name)
            return text[:HEAD_BYTES], f"{name} with BOM", text.encode("utf-8")
    if b"\x00" in head:
        guess = _utf16_without_bom(head)
        if guess is None:
            raise InputError(
                f"{path}: holds binary data, or text in an encoding not recognised (UTF-16 "
                "without a byte-order mark?); pass the export as CSV UTF-8, JSON, Parquet or Excel"
            )
        name = guess.upper().replace("UTF-16-", "UTF-16 ")
        text = _strict(path, everything(), guess, name)
        return text[:HEAD_BYTES], f"{name} without BOM", text.encode("utf-8")
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=whole)
        encoding = "UTF-8 with BOM" if head.startswith(codecs.BOM_UTF8) else "UTF-8"
        source: Source = path if data is None else data
    except UnicodeDecodeError:
        text, encoding, source = cp1252(everything())
    _refuse_binary(path, text)
    return text, encoding, source


def cp1252(data: bytes) -> tuple[str, str, bytes]:
    """Text that is not UTF-8: Windows-1252, or UTF-8 with a few bad bytes when it has a BOM."""
    if data.startswith(codecs.BOM_UTF8):
        text = data[3:].decode("utf-8", errors="replace")
        return text[:HEAD_BYTES], "UTF-8 with BOM and invalid bytes", text.encode("utf-8")
    text = data.decode("cp1252", errors="replace")
    return text[:HEAD_BYTES], "Windows-1252", text.encode("utf-8")


def _strict(path: Path, data: bytes, codec: str, name: str) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: is not valid {name} text (byte {exc.start}); save it again as UTF-8 CSV"
        ) from None


def _utf16_without_bom(head: bytes) -> str | None:
    """UTF-16 text of mostly ASCII has a NUL in every other byte: LE in odd, BE in even places."""
    pairs = len(head) // 2
    even = head[0 : pairs * 2 : 2].count(0)
    odd = head[1 : pairs * 2 : 2].count(0)
    if odd > 0.3 * pairs and even < 0.02 * pairs:
        return "utf-16-le"
    if even > 0.3 * pairs and odd < 0.02 * pairs:
        return "utf-16-be"
    return None


def _refuse_binary(path: Path, text: str) -> None:
    sample = text[:8192]
    controls = sum(1 for ch in sample if ch < " " and ch not in "\t\r\n\f\v")
    if controls > max(2, len(sample) // 100):
        raise InputError(
            f"{path}: holds binary data, not text; pass the CSV, JSON, Parquet or Excel export"
        )


# -- text: delimited, lists and PowerShell tables -----------------------------------------------


def _text(path: Path, source: Source, head: str, wrapper: str, encoding: str) -> Table:
    lines = head.splitlines()
    skip = 1 if lines and lines[0].lstrip("\ufeff").startswith("#TYPE") else 0
    shown = [ln for ln in lines[skip:] if ln.strip()]
    if len(shown) >= 2 and _TABLE_RULE.match(shown[1]):
        return _powershell_table(path, source, f"{wrapper}PowerShell table text ({encoding})")
    body = "\n".join(_complete(head).splitlines()[skip:])
    separator = _sniff_separator(body)
    first = next(csv.reader(io.StringIO(body), delimiter=separator), [])
    if not first:
        raise InputError(f"{path}: holds no rows of data; export the user IDs again")
    header_less = any(looks_like_id(cell) for cell in first)
    separated = _pasted_list(body, separator) if header_less else None
    if separated is not None:
        return _token_list(
            path, source, f"{wrapper}list of IDs separated by {separated} ({encoding})"
        )
    if header_less and len(first) == 1:
        kind = f"{wrapper}list, one ID per line ({encoding})"
    else:
        what = "header-less " if header_less else ""
        kind = f"{wrapper}{what}CSV ({_SEPARATORS[separator]}-separated, {encoding})"
    return _csv(path, source, kind, separator, skip, header_less)


def _complete(head: str) -> str:
    """The head without its last, maybe cut, line (or ID, when the head is one long line)."""
    if len(head) < HEAD_BYTES:
        return head
    cut = head.rfind("\n")
    if cut < 0:
        cut = max(head.rfind(c) for c in ",; \t")
    return head[: cut + 1]


def _pasted_list(body: str, separator: str) -> str | None:
    """How the IDs of a pasted list are separated, or None when the text is not such a list.

    A header-less text is a list when a line holds two IDs or more and either every value in
    it is an ID (of any kind), or it is one line, or its ID-less values are not a column of
    their own (as dates or names in a header-less CSV are): reading it as a list never drops
    an ID, where choosing one of its columns would.
    """
    lines = [line for line in body.splitlines()[:SAMPLE_ROWS] if line.strip()]
    tokens = pl.Series(lines, dtype=pl.String).str.extract_all(_TOKEN).to_list()
    valid = iter(kinds([t for line in tokens for t in line]))
    per_line = [[next(valid) is not None for _ in line] for line in tokens]
    if max((sum(ok) for ok in per_line), default=0) < 2:
        return None
    if not all(all(ok) for ok in per_line) and len(lines) > 1:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=separator))
        width = len(rows[0])
        if width > 1 and all(len(row) == width for row in rows):
            for n in range(width):
                cells = [row[n] for row in rows if row[n].strip()]
                if cells and not any(kinds(cells)):
                    return None  # a column without any ID: a header-less CSV
    gaps = "".join(pl.Series(lines).str.replace_all(_TOKEN, "").to_list())
    names = [name for name, char in _GAPS.items() if char in gaps]
    if any(ch.isspace() and ch not in " \t" for ch in gaps) and "spaces" not in names:
        names.append("spaces")
    if len(lines) > 1:
        names.append("line breaks")
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def _token_list(path: Path, source: Source, kind: str) -> Table:
    """Every ID of a pasted list, in order: each one is a row."""
    data = source_bytes(source)
    lines = pl.Series(data.decode("utf-8-sig", errors="replace").splitlines(), dtype=pl.String)
    values = lines.str.extract_all(_TOKEN).explode().drop_nulls().rename("column_1")
    return in_memory(path, values.to_frame(), kind, plain=True)


def _sniff_separator(body: str) -> str:
    """The candidate that splits the first records into the same number (>1) of fields."""
    best, best_score = ",", (0, 0)
    for sep in _SEPARATORS:
        rows = csv.reader(io.StringIO(body), delimiter=sep)
        counts = [len(r) for r, _ in zip(rows, range(50), strict=False)]
        counts = [c for c in counts if c]
        if not counts or counts[0] < 2:
            continue
        score = (sum(1 for c in counts if c == counts[0]), counts[0])
        if score > best_score:
            best, best_score = sep, score
    return best


def _csv(path: Path, source: Source, kind: str, sep: str, skip: int, header_less: bool) -> Table:
    state = {"source": source}

    def scan() -> pl.LazyFrame:
        return pl.scan_csv(
            state["source"],
            separator=sep,
            skip_lines=skip,
            has_header=not header_less,
            infer_schema=False,
            raise_if_empty=False,
            with_column_names=numbered if header_less else None,
        )

    def collect(frame: Callable[[], pl.LazyFrame], streaming: bool = False) -> pl.DataFrame:
        try:
            return frame().collect(engine="streaming" if streaming else "auto")
        except pl.exceptions.PolarsError as exc:
            if "utf-8" not in str(exc) or not isinstance(state["source"], Path):
                raise _csv_error(path, kind, exc, state["source"], sep, skip) from None
            state["source"] = cp1252(state["source"].read_bytes())[2]  # a bad byte past the head
            return collect(frame, streaming)

    def load(name: str) -> pl.Series:
        return _trim(collect(lambda: scan().select(pl.col(name))), blank).to_series()

    def load_keyed(name: str, key: Callable[[pl.Expr], pl.Expr]) -> pl.DataFrame:
        # Reading and keying in one streaming pass keeps both cores busy on big files.
        def keyed() -> pl.LazyFrame:
            raw = pl.col(name).alias("raw")
            return scan().select(raw, key(raw).alias("key"))

        return _trim(collect(keyed, streaming=True), blank)

    blank = _blank_lines_at_end(source)
    sample = collect(lambda: scan().head(SAMPLE_ROWS))
    return Table(path, kind, sample, load, header_less=header_less, load_keyed=load_keyed)


def _blank_lines_at_end(source: Source) -> int:
    """Empty lines after the last record: Polars reads each as a row, but they hold no data."""
    if isinstance(source, Path):
        with source.open("rb") as fh:
            fh.seek(max(fh.seek(0, 2) - 4096, 0))
            tail = fh.read()
    else:
        tail = source[-4096:]
    ending = tail[len(tail.rstrip(b"\r\n")) :]
    return max(ending.count(b"\n") - 1, 0)


def _trim(frame: pl.DataFrame, blank: int) -> pl.DataFrame:
    """Drop ``blank`` trailing rows when every cell in them is empty."""
    if blank and frame.height >= blank:
        tail = frame.tail(blank)
        if tail.select(pl.all_horizontal(pl.all().is_null())).to_series().all():
            return frame.head(frame.height - blank)
    return frame


def _csv_error(
    path: Path, kind: str, exc: Exception, source: Source, sep: str, skip: int
) -> InputError:
    message = first_line(exc)
    if "more fields" in message:
        data = source_bytes(source)
        text = io.StringIO(data.decode("utf-8", errors="replace"))
        rows = iter(list(csv.reader(text, delimiter=sep))[skip:])
        width = len(next(rows, []))
        row = next((n for n, r in enumerate(rows, start=1) if len(r) > width), None)
        where = f"row {row}" if row else "a row"
        return InputError(
            f"{path}: {where} has more fields than the header's {width}: a value holds an "
            f"unquoted {_SEPARATORS[sep]}; quote or fix that row and run again"
        )
    return InputError(f"{path}: cannot be read as {kind} ({message}); check the export")


def _powershell_table(path: Path, source: Source, kind: str) -> Table:
    """Format-Table text: a header line, a rule of dashes giving the column spans, then rows."""
    data = source_bytes(source)
    text = data.decode("utf-8-sig", errors="replace")  # any encoding was already made UTF-8
    lines = [ln.rstrip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    header, rule, rows = lines[0], lines[1], lines[2:]
    starts = [m.start() for m in re.finditer(r"-+", rule)]
    ends = [*starts[1:], None]
    values = pl.Series("line", rows, dtype=pl.String)
    columns: dict[str, pl.Series] = {}
    for start, end in zip(starts, ends, strict=True):
        name = header[start:end].strip() or f"column_{len(columns) + 1}"
        part = values.str.slice(start, None if end is None else end - start)
        columns[name] = part.str.strip_chars().replace("", None)
    frame = pl.DataFrame(columns)
    return in_memory(path, frame, kind)


# -- JSON and NDJSON ----------------------------------------------------------------------------


def _is_json(text: str) -> bool:
    """A '{' or '[' start is JSON unless the first line is a braced GUID of a plain list."""
    first = text.lstrip("\ufeff \t\r\n").split("\n", 1)[0].strip()
    return not re.fullmatch(rf"\{{{GUID_INSIDE}\}}", first.lower())
