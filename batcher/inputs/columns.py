"""Choose the ID column of an input: --column, known header aliases, then what the values hold.

Object IDs first (a known user-ID header, then the column with the most GUIDs); only when no
column holds object IDs, UPN, e-mail and SID columns (a known header, then the most of them).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from batcher.errors import InputError
from batcher.inputs.values import (
    GUID_INSIDE,
    KIND_GUID,
    KIND_SID,
    KIND_UPN,
    kind_of,
    normalise,
)

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
    "recipientobjectid",
    "principalobjectid",
    "id",
)
# Header aliases for a column of UPNs, e-mail addresses or on-premises SIDs, best first: the
# users' own names before their mailboxes, recipients (never senders), SIDs last.
_UPN_ALIASES = ("userprincipalname", "upn", "accountupn", "targetuserprincipalname", "username")
_MAIL_ALIASES = (
    "recipientemailaddress",
    "recipient",
    "recipientaddress",
    "recipients",
    "mail",
    "email",
    "emailaddress",
    "mailaddress",
    "primarysmtpaddress",
    "useremail",
)
_SID_ALIASES = (
    "accountsid",
    "onpremisessecurityidentifier",
    "usersid",
    "sid",
    "objectsid",
    "securityidentifier",
)
IDENTITY_ALIASES: tuple[str, ...] = _UPN_ALIASES + _MAIL_ALIASES + _SID_ALIASES
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
        "networkmessageid",
        "messagetraceid",
    }
)
# Columns of people who sent mail, not of the users to act on: never chosen without --column.
SENDER_COLUMNS = frozenset(
    {
        "sender",
        "senderaddress",
        "senderfromaddress",
        "sendermailfromaddress",
        "senderemailaddress",
        "senderobjectid",
        "from",
        "fromaddress",
        "replyto",
    }
)
# Object IDs in fewer sampled rows than this may be stray: a UPN column that is fuller wins.
_FULL = 0.5
_MAX_LISTED = 25


class NoColumn(InputError):
    """No column holds IDs, or none has the name given: another sheet of a workbook may."""


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
        picked = _by_alias(path, names, ID_ALIASES, "user-ID")
        if picked is not None:
            return picked
    scores = _scores(sample)
    guids = _by_hit_rate(path, scores, KIND_GUID, header_less)
    if guids is not None and guids[2] >= _FULL:
        return guids[0], guids[1]
    others = None if header_less else _identity_alias(path, names, scores)
    others = others or _by_hit_rate(path, scores, KIND_UPN, header_less)
    if others is not None and (guids is None or others[2] > guids[2]):
        return others[0], others[1]
    if guids is not None:
        return guids[0], guids[1]
    raise NoColumn(_no_id_column(path, sample))


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
                f"{path}: --column {column!r} matches {listed(match)}; give the full name: "
                f"{_options(match)} (when several hold users to act on, run once with each)"
            )
    if column in hidden:
        raise InputError(
            f"{path}: column {column!r} holds lists or objects, not single IDs; "
            "name a field inside it with a dotted path, e.g. --column 'properties.AccountObjectId'"
        )
    raise NoColumn(f"{path}: no column named {column!r}; columns are: {listed(names)}")


def _by_alias(
    path: Path, names: list[str], aliases: tuple[str, ...], what: str
) -> tuple[str, str] | None:
    """The column whose header (or, in nested JSON, last path part) is the best-ranked alias.

    Depth breaks no tie: in an audit record, ``id`` is the record and ``initiatedBy.user.id``
    the user, so two ``id`` fields are a question for the operator, not a guess.
    """
    ranked = [
        (aliases.index(header_key(leaf(n))), n) for n in names if header_key(leaf(n)) in aliases
    ]
    if not ranked:
        return None
    best = min(rank for rank, _ in ranked)
    winners = [n for rank, n in ranked if rank == best]
    if len(winners) > 1:
        raise _tie(path, winners, f"share the same {what} header")
    where = "field" if "." in winners[0] else "header"
    return winners[0], f"{where} {winners[0]!r} is a known {what} column name"


def _identity_alias(
    path: Path, names: list[str], scores: dict[str, dict[str, float]]
) -> tuple[str, str, float] | None:
    """A known UPN, e-mail or SID header, when its column holds at least one such value."""
    usable = [n for n in names if scores[n][KIND_UPN] + scores[n][KIND_SID] > 0]
    picked = _by_alias(path, usable, IDENTITY_ALIASES, "UPN, e-mail or SID")
    if picked is None:
        return None
    name, key = picked[0], header_key(leaf(picked[0]))
    what = "UPN" if key in _UPN_ALIASES else "user e-mail" if key in _MAIL_ALIASES else "SID"
    where = "field" if "." in name else "header"
    rate = scores[name][KIND_UPN] + scores[name][KIND_SID]
    return name, f"{where} {name!r} is a known {what} column name", rate


def _scores(sample: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Per column, the share of sampled rows holding an object ID, a UPN or e-mail, a SID."""
    rows = max(sample.height, 1)
    found = sample.select(
        kind_of(normalise(pl.col(n))).value_counts().implode().alias(n) for n in sample.columns
    )
    scores: dict[str, dict[str, float]] = {}
    for name in sample.columns:
        counts = {KIND_GUID: 0.0, KIND_UPN: 0.0, KIND_SID: 0.0}
        for row in found.item(0, name):
            kind, count = row.values()
            if kind is not None:
                counts[kind] = count / rows
        scores[name] = counts
    return scores


def _by_hit_rate(
    path: Path, scores: dict[str, dict[str, float]], kind: str, header_less: bool
) -> tuple[str, str, float] | None:
    """The column with the most object IDs (KIND_GUID), or the most UPNs and SIDs (KIND_UPN)."""
    never = SENDER_COLUMNS | (NON_USER_COLUMNS if kind == KIND_GUID else frozenset())
    rated = {
        name: counts[KIND_GUID] if kind == KIND_GUID else counts[KIND_UPN] + counts[KIND_SID]
        for name, counts in scores.items()
        if header_key(leaf(name)) not in never
    }
    scored = [(rate, name) for name, rate in rated.items() if rate > 0]
    if not scored:
        return None
    top = max(rate for rate, _ in scored)
    winners = [n for rate, n in scored if rate == top]
    if kind == KIND_GUID:
        held = "GUIDs"
    elif scores[winners[0]][KIND_SID] > scores[winners[0]][KIND_UPN]:
        held = "on-premises SIDs"
    else:
        held = "UPNs or e-mail addresses"
    if len(winners) > 1:
        raise _tie(path, winners, f"hold {held} equally often")
    what = "header-less file: column" if header_less else "column"
    return (
        winners[0],
        f"{what} {winners[0]!r} holds the most {held} ({top:.0%} of sampled rows)",
        top,
    )


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
        f"{path}: found no column of user IDs, UPNs, e-mail addresses or SIDs among: "
        f"{listed(names)}; name the column with --column NAME"
    )


def listed(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _tie(path: Path, names: list[str], why: str) -> InputError:
    """Two columns are equally good: both may hold users, so naming one must not drop the other."""
    return InputError(
        f"{path}: columns {listed(names)} {why}; name the column of users to act on with "
        f"{_options(names)} (when several hold such users, run once with each)"
    )


def _options(names: list[str]) -> str:
    return " or ".join(f"--column {n!r}" for n in names[:3]) + (" ..." if len(names) > 3 else "")
