"""Users read straight from Graph: a Defender XDR incident's evidence, risky users by level,
and who signed in from given addresses; paged and paced on each source's budget.

Each reader returns rows shaped like the inputs' identities (input_value, kind, source_file as
the row's source label, source_row), with the source's name and the evidence kind beside them.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from batcher.actions import FEEDS, Feed
from batcher.calls import Call, Caller, NotSent
from batcher.control import Control
from batcher.errors import AuthError, ConfigError, GraphError, InputError, NotFound
from batcher.graph import (
    INCIDENT_WITH_ALERTS,
    RISKY_USERS_WHERE,
    SIGN_INS_WHERE,
    GraphClient,
    literal,
)
from batcher.inputs import GUID, KIND_SID, KIND_UPN
from batcher.inputs.values import KIND_GUID

ROW_SCHEMA = {
    "source": pl.String,  # e.g. "incident 42": what the ledger's snapshot is kept under
    "input_value": pl.String,
    "kind": pl.String,  # guid | upn | sid
    "source_file": pl.String,  # the row's label: incident 42 / alert da630001… / userEvidence
    "source_row": pl.Int64,
    "evidence": pl.String,  # user | mailbox | recipient | risky | sign_in
}
# --evidence's names, and the alert evidence type each reads
EVIDENCE = {
    "user": "userEvidence",
    "mailbox": "mailboxEvidence",
    "recipient": "analyzedMessageEvidence",
}
DEFAULT_EVIDENCE = ("user", "mailbox")
LEVELS = ("low", "medium", "high")
RISKY_PAGE = 500  # $top: Identity Protection's largest page
SIGN_IN_PAGE = 1000  # $top: the sign-in logs' largest page
MAX_PREFIXES = 16  # filters one address range may expand into
CLAUSES_PER_QUERY = 15  # address clauses in one $filter


def no_rows() -> pl.DataFrame:
    return pl.DataFrame(schema=ROW_SCHEMA)


@dataclass
class Found:
    """What one source returned: its rows, and lines for the gate."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, source: str, value: str, kind: str, label: str, evidence: str) -> None:
        self.rows.append(
            {
                "source": source,
                "input_value": value,
                "kind": kind,
                "source_file": label,
                "source_row": len(self.rows) + 1,
                "evidence": evidence,
            }
        )

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=ROW_SCHEMA)


def evidence_kinds(text: str | None) -> tuple[str, ...]:
    """--evidence user,mailbox,recipient: refused in one line when it names another kind."""
    if text is None:
        return DEFAULT_EVIDENCE
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in EVIDENCE]
    if unknown or not kinds:
        raise ConfigError(
            f"--evidence {text}: {', '.join(unknown) or 'nothing'} is not an evidence kind; "
            f"choose among {', '.join(EVIDENCE)} (default: {','.join(DEFAULT_EVIDENCE)})"
        )
    return kinds


def risk_levels(text: str) -> tuple[str, ...]:
    levels = tuple(dict.fromkeys(v.strip().lower() for v in text.split(",") if v.strip()))
    unknown = [v for v in levels if v not in LEVELS]
    if unknown or not levels:
        raise ConfigError(
            f"--risky {text}: {', '.join(unknown) or 'nothing'} is not a risk level; "
            f"give one or more of {', '.join(LEVELS)}, e.g. --risky high,medium"
        )
    return levels


def address_clauses(text: str) -> tuple[str, ...]:
    """--signed-in-from: each address or CIDR range as $filter clauses the sign-in logs take
    (``ipAddress eq``, or ``startswith(ipAddress, 'a.b.')`` on whole octets), or a one-line
    refusal saying why."""
    clauses: list[str] = []
    for item in (a.strip() for a in text.split(",")):
        if not item:
            continue
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(
                f"--signed-in-from {item}: not an IP address or CIDR range (e.g. 203.0.113.7 "
                "or 203.0.113.0/24)"
            ) from None
        if net.num_addresses == 1:
            clauses.append(f"ipAddress eq {literal(str(net.network_address))}")
            continue
        if net.version == 6:
            raise ConfigError(
                f"--signed-in-from {item}: an IPv6 range cannot be filtered in the sign-in logs "
                "(they write addresses in shortened form, so a prefix does not match them "
                "all); give each IPv6 address"
            )
        boundary = math.ceil(net.prefixlen / 8) * 8
        parts = 2 ** (boundary - net.prefixlen)
        if net.prefixlen < 8 or parts > MAX_PREFIXES:
            raise ConfigError(
                f"--signed-in-from {item}: the sign-in logs filter addresses by whole octets "
                f"(a.b.c.), and this range would need {parts:,} filters (at most "
                f"{MAX_PREFIXES}); give a /{boundary - 4} or narrower, or /8, /16, /24"
            )
        for sub in net.subnets(new_prefix=boundary):
            if boundary == 32:
                clauses.append(f"ipAddress eq {literal(str(sub.network_address))}")
            else:
                octets = str(sub.network_address).split(".")[: boundary // 8]
                clauses.append(f"startswith(ipAddress,{literal('.'.join(octets) + '.')})")
    if not clauses:
        raise ConfigError("--signed-in-from: give one or more IP addresses or CIDR ranges")
    return tuple(dict.fromkeys(clauses))


def _identity(account: dict[str, Any] | None) -> tuple[str, str] | None:
    """A user account's object ID, else its UPN, else its on-premises SID (value, kind)."""
    account = account or {}
    uid = str(account.get("azureAdUserId") or "")
    if GUID.match(uid):
        return uid.lower(), KIND_GUID
    upn = str(account.get("userPrincipalName") or "")
    if "@" in upn:
        return upn.lower(), KIND_UPN
    sid = str(account.get("userSid") or "")
    return (sid.upper(), KIND_SID) if sid else None


class SourceReader:
    """Reads each source through ``caller`` (its budget's pacer, retried by time). A 403 trips
    the run's breaker with the permission the source needs (an AuthError); an unknown incident
    is an InputError."""

    def __init__(self, client: GraphClient, caller: Caller, control: Control) -> None:
        self._client = client
        self._caller = caller
        self._control = control
        self.requests = 0

    async def _get(self, feed: Feed, path: str) -> dict[str, Any]:
        source = FEEDS[feed]
        send: Callable[[str], Awaitable[dict[str, Any]]] = lambda crid: self._client.get_json(  # noqa: E731
            path, crid
        )
        self.requests += 1
        call = Call(
            source.budget, send=send, permission=source.permission, fields={"source": feed.value}
        )
        with self._control.scope():
            try:
                return await self._caller(call)
            except (GraphError, NotSent) as exc:
                if self._control.breaker.tripped is not None:
                    raise self._control.breaker.tripped from None
                if isinstance(exc, NotFound):
                    raise
                raise AuthError(
                    f"could not read {feed.value.replace('_', '-')} from Graph: {exc}; "
                    "run the same command again"
                ) from None
        tripped = self._control.breaker.tripped
        raise tripped if tripped is not None else AuthError("the read was stopped")

    async def incident(self, number: str, kinds: tuple[str, ...]) -> Found:
        """The users in incident ``number``'s alerts' evidence of ``kinds``."""
        source = f"incident {number}"
        try:
            body = await self._get(Feed.INCIDENT, INCIDENT_WITH_ALERTS.format(number))
        except NotFound:
            raise InputError(
                f"--incident {number}: Defender XDR has no such incident in this tenant (404); "
                "check the ID in the Defender portal's incident page"
            ) from None
        found, seen = Found(), Counter[str]()
        wanted = {EVIDENCE[k]: k for k in kinds}
        for alert in body.get("alerts") or []:
            alert_id = str(alert.get("id", ""))
            short = alert_id[:8] + ("…" if len(alert_id) > 8 else "")
            for item in alert.get("evidence") or []:
                kind = str(item.get("@odata.type", "")).rsplit(".", 1)[-1]
                if kind not in EVIDENCE.values():
                    continue
                seen[kind] += 1
                if kind not in wanted:
                    continue
                label = f"{source} / alert {short} / {kind}"
                for value in _evidence_users(kind, item):
                    found.add(source, *value, label, wanted[kind])
        counts = ", ".join(
            f"{seen[kind]:,} {kind}{'' if name in kinds else ' (not used)'}"
            for name, kind in EVIDENCE.items()
        )
        found.notes.append(
            f"{source}: {len(body.get('alerts') or [])} alerts; evidence: {counts}"
            + (
                ""
                if "recipient" in kinds
                else "; --evidence user,mailbox,recipient adds recipients"
            )
            + (
                "; a recipient of phishing is not necessarily compromised"
                if "recipient" in kinds
                else ""
            )
        )
        return found

    async def risky(self, levels: tuple[str, ...]) -> Found:
        """Risky users at ``levels`` still atRisk, in pages of 500."""
        source = f"risky {','.join(levels)}"
        either = " or ".join(f"riskLevel eq {literal(v)}" for v in levels)
        query = (
            f"({either}) and riskState eq 'atRisk'"
            if len(levels) > 1
            else f"{either} and riskState eq 'atRisk'"
        )
        link: str | None = RISKY_USERS_WHERE.format(query, RISKY_PAGE)
        found, pages = Found(), 0
        while link:
            body = await self._get(Feed.RISKY, link)
            pages += 1
            for user in body.get("value") or []:
                uid = str(user.get("id", ""))
                if GUID.match(uid):
                    level = user.get("riskLevel", "")
                    found.add(
                        source, uid.lower(), KIND_GUID, f"risky users / {level} / atRisk", "risky"
                    )
            nxt = body.get("@odata.nextLink")
            link = nxt if isinstance(nxt, str) else None
        found.notes.append(
            f"{source}: {len(found.rows):,} users at risk ({', '.join(levels)}), "
            f"{pages} page{'s' * (pages != 1)} on Identity Protection's budget"
        )
        return found

    async def sign_ins(self, addresses: str, clauses: tuple[str, ...], since: datetime) -> Found:
        """The users with a successful sign-in matching ``clauses`` since ``since``."""
        source = f"signed-in-from {addresses}"
        stamp = since.strftime("%Y-%m-%dT%H:%M:%SZ")
        found, users, sign_ins, pages = Found(), set[str](), 0, 0
        first = last = ""
        for start in range(0, len(clauses), CLAUSES_PER_QUERY):
            group = " or ".join(clauses[start : start + CLAUSES_PER_QUERY])
            where = f"({group}) and createdDateTime ge {stamp} and status/errorCode eq 0"
            link: str | None = SIGN_INS_WHERE.format(where, SIGN_IN_PAGE)
            while link:
                body = await self._get(Feed.SIGN_INS, link)
                pages += 1
                for row in body.get("value") or []:
                    if (row.get("status") or {}).get("errorCode", 0) != 0:
                        continue
                    sign_ins += 1
                    when = str(row.get("createdDateTime", ""))
                    first, last = min(first or when, when), max(last, when)
                    value = _identity(
                        {
                            "azureAdUserId": row.get("userId"),
                            "userPrincipalName": row.get("userPrincipalName"),
                        }
                    )
                    if value is None or value[0] in users:
                        continue
                    users.add(value[0])
                    label = f"sign-in from {row.get('ipAddress', '')} at {when}"
                    found.add(source, *value, label, "sign_in")
                nxt = body.get("@odata.nextLink")
                link = nxt if isinstance(nxt, str) else None
        span = f"{first} to {last}" if sign_ins else "none"
        found.notes.append(
            f"{source}: {sign_ins:,} successful sign-ins since {stamp} ({span}) by "
            f"{len(users):,} users; {pages} page{'s' * (pages != 1)} on the reports budget"
        )
        return found


def _evidence_users(kind: str, item: dict[str, Any]) -> list[tuple[str, str]]:
    """The user (value, kind) one evidence item names, if any."""
    if kind == EVIDENCE["user"]:
        found = _identity(item.get("userAccount"))
    elif kind == EVIDENCE["mailbox"]:
        found = _identity(item.get("userAccount")) or _identity(
            {"userPrincipalName": item.get("upn") or item.get("primaryAddress")}
        )
    else:
        found = _identity({"userPrincipalName": item.get("recipientEmailAddress")})
    return [found] if found is not None else []
