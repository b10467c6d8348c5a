"""What the guards read from Graph before a plan: the protected accounts ([safety] protected:
UPNs, object IDs, groups' transitive members) and the holders of privileged directory roles
(active and eligible), in a few paged listings on the directory's read budget, never one
read per user."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from batcher.actions import READS, Read
from batcher.calls import Call, Caller
from batcher.config import protected_kind
from batcher.errors import (
    AuthError,
    ConfigError,
    Forbidden,
    GraphError,
    NotFound,
    Unauthorized,
    first_leaf,
)
from batcher.graph import GraphClient
from batcher.graph.requests import (
    ROLE_DEFINITIONS,
    ROLE_LISTINGS,
    group_members,
    role_listing,
    users_by_upn,
)

ROLE_PERMISSION = "RoleManagement.Read.Directory (or a Directory Readers role when delegated)"
GROUP_PERMISSION = "GroupMember.Read.All"
# Held back whatever Graph says of isPrivileged (older API versions do not carry it)
PRIVILEGED = frozenset(
    {
        "Global Administrator",
        "Privileged Role Administrator",
        "Privileged Authentication Administrator",
        "Security Administrator",
        "User Administrator",
        "Exchange Administrator",
        "SharePoint Administrator",
        "Application Administrator",
        "Cloud Application Administrator",
    }
)
_UPNS_PER_FILTER = 15  # Graph's limit of expressions in one filter


@dataclass
class Found:
    """What the reads found: protected users (user_id -> the entry that protects them),
    privileged role holders (user_id -> role names), protected UPNs that name nobody, and how
    many requests it took."""

    protected: dict[str, str] = field(default_factory=dict)
    roles: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    requests: int = 0


class GuardReader:
    """Reads through ``caller`` (paced, retried); a refusal names the permission it needs."""

    def __init__(self, client: GraphClient, caller: Caller) -> None:
        self.client = client
        self.caller = caller
        self.found = Found()

    async def protected(self, entries: Sequence[str]) -> None:
        """Resolve [safety] protected to object IDs: IDs as they are, UPNs by a filtered
        listing (15 a request), groups by their transitive members (paged)."""
        found = self.found
        upns = [e for e in entries if protected_kind(e) == "upn"]
        for entry in entries:
            if protected_kind(entry) == "id":
                found.protected.setdefault(entry.lower(), entry)
        for start in range(0, len(upns), _UPNS_PER_FILTER):
            chunk = upns[start : start + _UPNS_PER_FILTER]
            users = await self._pages(
                users_by_upn(chunk), READS[Read.USER].permission, "the protected UPNs"
            )
            by_upn = {str(u.get("userPrincipalName", "")).lower(): u for u in users}
            for upn in chunk:
                user = by_upn.get(upn.lower())
                if user is None:
                    found.unknown.append(upn)
                else:
                    found.protected.setdefault(str(user["id"]).lower(), upn)
        for entry in entries:
            if protected_kind(entry) == "group":
                for uid in await self._members(entry[len("group:") :], entry):
                    found.protected.setdefault(uid, entry)

    async def _members(self, group_id: str, entry: str) -> list[str]:
        what = f"the members of the protected group {group_id}"
        try:
            members = await self._pages(group_members(group_id), GROUP_PERMISSION, what)
        except NotFound:
            raise ConfigError(
                f"[safety] protected {entry!r}: Graph has no group with that ID; fix the entry "
                "(the group's object ID) before any write"
            ) from None
        return [str(m["id"]).lower() for m in members if m.get("id")]

    async def role_holders(self) -> None:
        """Users with an active or eligible assignment of a privileged role (directly, or
        through a role-assignable group): two listings per privileged role."""
        definitions = await self._pages(ROLE_DEFINITIONS, ROLE_PERMISSION, "roles")
        roles = [
            (str(d["id"]), str(d.get("displayName", d["id"])))
            for d in definitions
            if d.get("id") and (d.get("isPrivileged") is True or d.get("displayName") in PRIVILEGED)
        ]
        listed: list[tuple[str, dict[str, Any]]] = []

        async def read(kind: str, role_id: str, name: str) -> None:
            label = name if kind == ROLE_LISTINGS[0] else f"{name} (eligible)"
            for item in await self._pages(role_listing(kind, role_id), ROLE_PERMISSION, "roles"):
                listed.append((label, item))

        try:
            async with anyio.create_task_group() as group:
                for role_id, name in roles:
                    for kind in ROLE_LISTINGS:
                        group.start_soon(read, kind, role_id, name)
        except BaseExceptionGroup as exc:
            raise first_leaf(exc) from None
        for label, item in listed:
            principal = item.get("principal") or {}
            pid = str(item.get("principalId") or principal.get("id") or "").lower()
            kind = str(principal.get("@odata.type", "#microsoft.graph.user"))
            if kind.endswith(".group"):
                users = await self._members(pid, f"group:{pid}")
                _add(self.found.roles, users, f"{label} via group {pid}")
            elif kind.endswith(".user") and pid:
                _add(self.found.roles, [pid], label)

    async def _pages(self, path: str, permission: str, what: str) -> list[dict[str, Any]]:
        """Every page of a listing; a 403 or 401 stops the run before any write."""
        items: list[dict[str, Any]] = []
        link: str | None = path
        while link is not None:
            here = link
            call = Call(
                READS[Read.USER].budget,
                send=functools.partial(self.client.page, here),
                permission=permission,
                fields={"read": "guards"},
            )
            try:
                value, link = await self.caller(call)
            except (Forbidden, Unauthorized) as exc:
                raise AuthError(_refused(what, exc, permission)) from None
            finally:
                self.found.requests += 1
            items.extend(value)
        return items


def _add(roles: dict[str, list[str]], users: Iterable[str], label: str) -> None:
    for uid in users:
        held = roles.setdefault(uid, [])
        if label not in held:
            held.append(label)


def _refused(what: str, exc: GraphError, permission: str) -> str:
    return (
        f"Graph refused reading {what} ({exc.status} {exc.code or 'Forbidden'}, request-id "
        f"{exc.request_id or 'none'}): the app or user needs {permission}; nothing was sent: "
        "grant it, then run the same command"
    )
