"""Requests inside JSON batches, and the OData filters of directory look-ups, quoted properly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from batcher.actions import Action
from batcher.errors import GraphError
from batcher.graph.answers import error_for

MAX_BATCH = 20  # requests in one JSON batch
MAX_FILTER = 15  # expressions in one $filter (each value of an `in` and each `or` clause)
USER_FIELDS = (
    "id",
    "userPrincipalName",
    "mail",
    "proxyAddresses",
    "onPremisesSecurityIdentifier",
    "userType",
    "accountEnabled",
    "onPremisesSyncEnabled",
)


@dataclass(frozen=True)
class InnerRequest:
    """One request of a JSON batch; ``url`` is relative to the API version."""

    id: str
    method: str
    url: str
    body: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        request: dict[str, Any] = {"id": self.id, "method": self.method, "url": self.url}
        if self.body is not None:  # a request with a body needs its Content-Type
            request["headers"] = {"Content-Type": "application/json"}
            request["body"] = dict(self.body)
        return request


@dataclass(frozen=True)
class InnerAnswer:
    """One answer of a JSON batch, judged on its own (the outer 200 says nothing about it)."""

    id: str
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None

    @property
    def ok(self) -> bool:
        """A 2xx: Graph accepted this request."""
        return 200 <= self.status < 300

    def error(self, client_request_id: str) -> GraphError | None:
        if self.ok:
            return None
        return error_for(self.status, self.body, self.headers, client_request_id)

    @property
    def request_id(self) -> str | None:
        lowered = {k.lower(): v for k, v in self.headers.items()}
        return lowered.get("request-id")


def action_request(
    action: Action, user_id: str, ref: str, body: Mapping[str, Any] | None = None
) -> InnerRequest:
    """A per-user action (PATCH /users/{id}, POST /users/{id}/revokeSignInSessions); ``body``:
    the one made for this user (its secret_body), else the table's."""
    url = action.path.replace("{id}", quote(user_id, safe=""))
    return InnerRequest(ref, action.method, url, body if body is not None else action.body)


def literal(value: str) -> str:
    """An OData string literal: single quotes, a quote inside doubled."""
    return "'" + value.replace("'", "''") + "'"


def match_any(field_name: str, values: Sequence[str]) -> str:
    """``field eq 'v'``, or ``field in ('a', 'b')`` for several values."""
    if len(values) == 1:
        return f"{field_name} eq {literal(values[0])}"
    return f"{field_name} in ({', '.join(literal(v) for v in values)})"


def match_proxy(addresses: Sequence[str]) -> str:
    """Old aliases: ``proxyAddresses/any(p:p eq 'smtp:a@x') or ...`` (case does not matter)."""
    return " or ".join(f"proxyAddresses/any(p:p eq {literal('smtp:' + a)})" for a in addresses)


def users_query(odata_filter: str, ref: str, select: Sequence[str] = USER_FIELDS) -> InnerRequest:
    """``GET /users?$filter=...&$select=...``, every reserved character encoded (``#``, ``+``)."""
    url = f"/users?$filter={quote(odata_filter, safe='')}&$select={','.join(select)}"
    return InnerRequest(ref, "GET", url)


# Where run reads users straight from Graph (batcher.workers.sources): format with the
# incident's number, or the $filter and the page size.
INCIDENT_WITH_ALERTS = "/security/incidents/{}?$expand=alerts"
RISKY_USERS_WHERE = "/identityProtection/riskyUsers?$filter={}&$top={}"
SIGN_INS_WHERE = "/auditLogs/signIns?$filter={}&$top={}"

# The guards' listings (paths under the version; a page's @odata.nextLink is followed as is)
ROLE_DEFINITIONS = "/roleManagement/directory/roleDefinitions"
ROLE_LISTINGS = ("roleAssignments", "roleEligibilityScheduleInstances")  # active, eligible (PIM)


def users_by_upn(upns: Sequence[str]) -> str:
    """The users with these UPNs (at most 15), their id and UPN."""
    return (
        f"/users?$filter={quote(match_any('userPrincipalName', upns))}&$select=id,userPrincipalName"
    )


def group_members(group_id: str) -> str:
    """A group's users, transitively (members of nested groups too)."""
    return (
        f"/groups/{quote(group_id)}/transitiveMembers/microsoft.graph.user"
        "?$select=id,userPrincipalName"
    )


def role_listing(listing: str, role_id: str) -> str:
    """One role's assignments (ROLE_LISTINGS: active or eligible), principals expanded."""
    wanted = quote(f"roleDefinitionId eq {literal(role_id)}")
    return f"/roleManagement/directory/{listing}?$filter={wanted}&$expand=principal"
