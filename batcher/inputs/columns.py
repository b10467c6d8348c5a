"""Choose the ID column of an input: --column, then a known header alias, then GUID hit rate."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from batcher.errors import InputError
from batcher.inputs.values import GUID_INSIDE, GUID_PATTERN, normalise

# Header aliases for the user ID column, best first (compared after header_key()).
ID_ALIASES: tuple[str, ...] = (
    "userid",
    "objectid",
    "userobjectid",
    "accountobjectid",
    "aaduserid",
    "azureaduserid",
    "entrauserid",
    "targetuserid",
    "principalobjectid",
    "id",
)
# GUID columns that never hold user IDs (compared after header_key()).
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
        "aaddeviceid",
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
        "uniquetokenidentifier",
        "originalrequestid",
    }
)
_MAX_LISTED = 25


def header_key(name: str) -> str:
    """Normalise a header for alias matching: case, spaces, punctuation and a [UTC] suffix."""
    key = re.sub(r"_duplicated_\d+$", "", name.strip().lower())  # Polars' name for a repeat
    key = re.sub(r"\[(utc|local)\]\s*$", "", key.strip())
    return "".join(ch for ch in key if ch.isalnum())


def leaf(name: str) -> str:
    """The last part of a dotted path from nested JSON (``properties.AccountObjectId``)."""
    return name.rsplit(".", 1)[-1]


def pick_column(
    path: Path,
    sample: pl.DataFrame,
    column: str | None,
    header_less: bool = False,
    hidden: tuple[str, ...] = (),
) -> tuple[str, str]:
    """Name of the ID column in ``sample`` (every column String) and why it was chosen.

    ``hidden`` names columns the file has but that hold lists, objects or bytes.
    """
    names = sample.columns
    if column is not None:
        return _named(path, names, column, hidden), "chosen with --column"
    if header_less and len(names) == 1:
        return names[0], "the file is a plain list of IDs without a header"
    if not header_less:
        picked = _by_alias(path, names)
        if picked is not None:
            return picked
    return _by_hit_rate(path, sample, header_less)


def _named(path: Path, names: list[str], column: str, hidden: tuple[str, ...]) -> str:
    for match in (
        [n for n in names if n == column],
        [n for n in names if header_key(n) == header_key(column)],
        [n for n in names if header_key(leaf(n)) == header_key(column)],
    ):
        if len(match) == 1:
            return match[0]
        if len(match) > 1:
            raise InputError(
                f"{path}: --column {column!r} matches {_listed(match)}; "
                f"give the full name, e.g. --column {match[0]!r}"
            )
    if column in hidden:
        raise InputError(
            f"{path}: column {column!r} holds lists or objects, not single IDs; "
            "name a field inside it with a dotted path, e.g. --column 'properties.AccountObjectId'"
        )
    raise InputError(f"{path}: no column named {column!r}; columns are: {_listed(names)}")


def _by_alias(path: Path, names: list[str]) -> tuple[str, str] | None:
    """The column whose header (or, in nested JSON, last path part) is the best-ranked alias.

    Depth breaks no tie: in an audit record, ``id`` is the record and ``initiatedBy.user.id``
    the user, so two ``id`` fields are a question for the operator, not a guess.
    """
    ranked = [
        (ID_ALIASES.index(header_key(leaf(n))), n)
        for n in names
        if header_key(leaf(n)) in ID_ALIASES
    ]
    if not ranked:
        return None
    best = min(rank for rank, _ in ranked)
    winners = [n for rank, n in ranked if rank == best]
    if len(winners) > 1:
        raise _tie(path, winners, "share the same ID header")
    what = "field" if "." in winners[0] else "header"
    return winners[0], f"{what} {winners[0]!r} is a known user-ID column name"


def _by_hit_rate(path: Path, sample: pl.DataFrame, header_less: bool) -> tuple[str, str]:
    candidates = [n for n in sample.columns if header_key(leaf(n)) not in NON_USER_COLUMNS]
    hits = sample.select(
        normalise(pl.col(n)).str.contains(GUID_PATTERN).sum().alias(n) for n in candidates
    )
    rows = max(sample.height, 1)
    scored = [(hits.item(0, n) / rows, n) for n in hits.columns if hits.item(0, n)]
    if not scored:
        raise InputError(_no_id_column(path, sample))
    top = max(rate for rate, _ in scored)
    winners = [n for rate, n in scored if rate == top]
    if len(winners) > 1:
        raise _tie(path, winners, "hold GUIDs equally often")
    what = "header-less file: column" if header_less else "column"
    return winners[0], f"{what} {winners[0]!r} holds the most GUIDs ({top:.0%} of sampled rows)"


def _no_id_column(path: Path, sample: pl.DataFrame) -> str:
    """Why no column holds IDs; points at a wrong separator when GUIDs hide inside values."""
    names = sample.columns
    for name in names:
        values = sample.get_column(name).drop_nulls()
        inside = values.filter(values.str.to_lowercase().str.contains(GUID_INSIDE))
        if inside.len():
            shown = inside.item(0)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            return (
                f"{path}: column {name!r} holds GUIDs inside longer values (like {shown!r}); "
                "the separator or layout was not recognised: save the export as a "
                "comma-separated CSV with a header row"
            )
    return (
        f"{path}: found no column of user IDs among: {_listed(names)}; "
        "name the column with --column NAME"
    )


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _tie(path: Path, names: list[str], why: str) -> InputError:
    return InputError(
        f"{path}: columns {_listed(names)} {why}; choose one with --column {names[0]!r}"
    )
