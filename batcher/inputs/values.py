"""Clean, classify, validate and key raw values (object IDs, UPNs, SIDs), vectorised in Polars."""

from __future__ import annotations

import re

import polars as pl

# The one definition of a canonical object ID (lower-case, hyphenated); others import it.
GUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
GUID = re.compile(GUID_PATTERN, re.IGNORECASE)  # compiled once, for matching in Python
NIL_GUID = "00000000-0000-0000-0000-000000000000"

# Kinds of valid value: an object ID, a UPN or e-mail address, an on-premises (AD) SID.
KIND_GUID = "guid"
KIND_UPN = "upn"
KIND_SID = "sid"

REASON_EMPTY = "empty value"
REASON_NOT_ID = "not an object ID, UPN, e-mail address or SID"
REASON_NOT_GUID = REASON_NOT_ID  # the name this reason had when only object IDs were read
REASON_UPN = (
    "not a valid UPN or e-mail address: it must look like name@domain.tld, "
    "without spaces, commas, semicolons, angle brackets or parentheses"
)
REASON_SID = (
    "a well-known or non-user SID; only on-premises user SIDs (S-1-5-21-<domain>-<RID>) are read"
)
REASON_NIL = "nil GUID (all zeros) is not a user"
REASON_INSIDE = "holds a GUID among other text; check the file's separator or clean the value"
REASON_SEVERAL = "holds several IDs in one value; put one per row or check the file's separator"

# Characters trimmed from both ends of a value: whitespace, invisible marks, quotes, brackets.
EDGE_CHARS = " \t\r\n\v\f\u00a0\u2007\u202f\u3000\u200b\u200c\u200d\u2060\ufeff\"'`{}()"
_EDGE_CLASS = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in EDGE_CHARS) + "]"
# Leading edge characters and prefixes, in any order and number (one pass: idempotent).
_LEADING = rf"^(?:{_EDGE_CLASS}|urn:uuid:|mailto:|smtp:)+"
# "Display Name <addr@x.com>": one pair of angle brackets, only edge characters after it.
_DISPLAY_NAME = rf"^[^<>]*<([^<>]*)>{_EDGE_CLASS}*$"
# Every other GUID shape is derived from GUID_PATTERN: the 32 hex digits in groups, to hyphenate;
_HEX32 = GUID_PATTERN.replace("[0-9a-f]", "([0-9a-f]").replace("}-", "})").replace("}$", "})$")
# a value that needs no cleaning: hyphenated GUID text in either case, nothing around it;
_CANONICAL_ANY_CASE = GUID_PATTERN.replace("[0-9a-f]", "[0-9a-fA-F]")
# a GUID, hyphens optional, anywhere in a (lower-case) value.
GUID_INSIDE = GUID_PATTERN[1:-1].replace("}-", "}-?")

# A UPN or e-mail address after cleaning (lower case): a dot-atom local part that starts with a
# letter, digit or underscore (so never a spreadsheet formula), @, a dotted domain, a TLD.
_LOCAL = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
UPN_PATTERN = (
    rf"^[a-z0-9_]{_LOCAL}*(?:\.{_LOCAL}+)*"
    rf"@(?:{_LABEL}\.)+(?:[a-z]{{2,63}}|xn--[a-z0-9-]{{1,59}})$"
)
_LOOSE_ADDRESS = r"^[^@\s]+@[^@\s]+$"
# An on-premises user SID once cleaned: the domain's three numbers and the account's RID.
SID_PATTERN = r"^S-1-5-21-[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,10}$"
_ANY_SID = r"^S-1-[0-9]+(?:-[0-9]+)+$"
# A value made of several IDs (in any form) between commas, semicolons and white space.
_PIECE = (
    rf"(?:[{{(]?{GUID_INSIDE}[}})]?"
    rf"|{UPN_PATTERN[1:-1]}|(?i:s-1-5-21-[0-9]{{1,10}}-[0-9]{{1,10}}-[0-9]{{1,10}}-[0-9]{{1,10}}))"
)
_SEVERAL = rf"^{_PIECE}(?:[,;\s]+{_PIECE})+$"


def normalise(expr: pl.Expr) -> pl.Expr:
    """Clean raw values: an object ID to lower-case hyphenated text, a UPN to lower case, a SID
    to upper-case ``S-1-...``; edge characters, ``urn:uuid:``, ``mailto:``, ``smtp:`` and a
    display name around ``<addr>`` go. Not yet validated; applying it twice changes nothing.
    """
    lower = expr.str.to_lowercase().str.replace(_DISPLAY_NAME, "${1}")
    cleaned = lower.str.replace(_LEADING, "").str.strip_chars_end(EDGE_CHARS)
    return cleaned.str.replace(_HEX32, "${1}-${2}-${3}-${4}-${5}").str.replace(
        r"^s-1-", "S-1-", literal=False
    )


def kind_of(cleaned: pl.Expr) -> pl.Expr:
    """The kind of a normalised value (KIND_GUID, KIND_UPN, KIND_SID), or null when invalid."""
    return (
        pl.when(cleaned.str.contains(GUID_PATTERN) & (cleaned != NIL_GUID))
        .then(pl.lit(KIND_GUID))
        .when(cleaned.str.contains(UPN_PATTERN))
        .then(pl.lit(KIND_UPN))
        .when(cleaned.str.contains(SID_PATTERN))
        .then(pl.lit(KIND_SID))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def rejection_reason(raw: pl.Expr, cleaned: pl.Expr) -> pl.Expr:
    """Why a raw value is not a usable user ID, UPN or SID, or null when it is one."""
    return (
        pl.when(raw.is_null() | (cleaned == ""))
        .then(pl.lit(REASON_EMPTY))
        .when(cleaned == NIL_GUID)
        .then(pl.lit(REASON_NIL))
        .when(kind_of(cleaned).is_not_null())
        .then(pl.lit(None, dtype=pl.String))
        .when(cleaned.str.contains(_SEVERAL))
        .then(pl.lit(REASON_SEVERAL))
        .when(cleaned.str.contains(_ANY_SID))
        .then(pl.lit(REASON_SID))
        .when(cleaned.str.contains(GUID_INSIDE))
        .then(pl.lit(REASON_INSIDE))
        .when(cleaned.str.contains(_LOOSE_ADDRESS))
        .then(pl.lit(REASON_UPN))
        .otherwise(pl.lit(REASON_NOT_ID))
    )


def guid_key(text: pl.Expr) -> pl.Expr:
    """The 128-bit number of hyphenated GUID text (the exact de-duplication key), else null."""
    return text.str.replace_all("-", "", literal=True).str.to_integer(
        base=16, dtype=pl.UInt128, strict=False
    )


def fast_key(raw: pl.Expr) -> pl.Expr:
    """The key of a raw value that is already clean GUID text (any case), else null.

    Most exports hold clean IDs: this skips the string rewriting of normalise() and the kind
    checks for them. The nil GUID is left null so that the full check rejects it with its reason.
    """
    key = pl.when(raw.str.contains(_CANONICAL_ANY_CASE)).then(guid_key(raw))
    return pl.when(key != 0).then(key)


def kinds(values: list[str]) -> list[str | None]:
    """kind_of(normalise(v)) for a few values in Python (sniffing a file's first lines)."""
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    return frame.select(kind_of(normalise(pl.col("v")))).to_series().to_list()


def looks_like_id(cell: str) -> bool:
    """Header cells are names; a first row with an ID, a UPN or a SID in it is data (no header)."""
    if re.search(r"[^@\s]@", cell) or re.search(GUID_INSIDE, cell.lower()):
        return True
    return re.match(r"\s*s-1-\d", cell, flags=re.IGNORECASE) is not None
