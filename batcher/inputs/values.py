"""Clean, validate and key raw ID values, vectorised in Polars."""

from __future__ import annotations

import re

import polars as pl

GUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
NIL_GUID = "00000000-0000-0000-0000-000000000000"

REASON_EMPTY = "empty value"
REASON_UPN = "looks like a UPN or e-mail address, not an object ID; resolve it to the object ID"
REASON_NIL = "nil GUID (all zeros) is not a user"
REASON_INSIDE = "holds a GUID among other text; check the file's separator or clean the value"
REASON_NOT_GUID = "not a GUID"

# Characters trimmed from both ends of a value: whitespace, invisible marks, quotes, brackets.
EDGE_CHARS = " \t\r\n\v\f\u00a0\u2007\u202f\u3000\u200b\u200c\u200d\u2060\ufeff\"'`{}()"
_EDGE_CLASS = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in EDGE_CHARS) + "]"
# Leading edge characters and urn:uuid: prefixes, in any order and number (one pass: idempotent).
_LEADING = rf"^(?:{_EDGE_CLASS}|urn:uuid:)+"
_HEX32 = r"^([0-9a-f]{8})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{12})$"
_HEX = "[0-9a-fA-F]"
# A value that needs no cleaning: hyphenated GUID text in either case, nothing around it.
_CANONICAL_ANY_CASE = rf"^{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}$"
GUID_INSIDE = r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}"


def normalise(expr: pl.Expr) -> pl.Expr:
    """Clean a column of raw values into lower-case hyphenated GUID text (not yet validated)."""
    cleaned = expr.str.to_lowercase().str.replace(_LEADING, "").str.strip_chars_end(EDGE_CHARS)
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
        .when(cleaned.str.contains(GUID_PATTERN))
        .then(pl.lit(None, dtype=pl.String))
        .when(cleaned.str.contains(GUID_INSIDE))
        .then(pl.lit(REASON_INSIDE))
        .otherwise(pl.lit(REASON_NOT_GUID))
    )


def guid_key(text: pl.Expr) -> pl.Expr:
    """The 128-bit number of hyphenated GUID text (the exact de-duplication key), else null."""
    return text.str.replace_all("-", "", literal=True).str.to_integer(
        base=16, dtype=pl.UInt128, strict=False
    )


def fast_key(raw: pl.Expr) -> pl.Expr:
    """The key of a raw value that is already clean GUID text (any case), else null.

    Most exports hold clean IDs: this skips the string rewriting of normalise() for them.
    The nil GUID is left null so that the full check rejects it with its reason.
    """
    key = pl.when(raw.str.contains(_CANONICAL_ANY_CASE)).then(guid_key(raw))
    return pl.when(key != 0).then(key)


def looks_like_id(cell: str) -> bool:
    """Header cells are names; a first row with a GUID or a UPN in it is data (no header)."""
    return "@" in cell or re.search(GUID_INSIDE, cell.lower()) is not None
