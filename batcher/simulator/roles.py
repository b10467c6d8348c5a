"""The simulated tenant's directory roles (definitions, active and eligible assignments) and
groups' transitive members, from [simulator] role_holders, eligible_role_holders and groups."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batcher.simulator.directory import Directory
from batcher.simulator.replies import DENIED, Context, odata_context
from batcher.simulator.users import DirectoryEndpoints

# Built-in roles as Graph lists them: (template ID, display name, isPrivileged)
ROLES = (
    ("62e90394-69f5-4237-9190-012177145e10", "Global Administrator", True),
    ("e8611ab8-c189-46e8-94e1-60213ab1f814", "Privileged Role Administrator", True),
    ("7be44c8a-adaf-4e2a-84d6-ab2649e08a13", "Privileged Authentication Administrator", True),
    ("194ae4cb-b126-40b2-bd5b-6091b380977d", "Security Administrator", True),
    ("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator", True),
    ("29232cdf-9323-42fd-ade2-1d097af3e4de", "Exchange Administrator", False),
    ("f28a1f50-f6e7-4571-818b-6a12f2af6b6c", "SharePoint Administrator", False),
    ("9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3", "Application Administrator", True),
    ("158c047a-c907-4556-b7ef-446551a6b5f7", "Cloud Application Administrator", True),
    ("f2ef992c-3afb-46b9-b7cf-a126ee74c451", "Global Reader", False),
    ("88d8e3e3-8f55-4a1e-953a-9b9898b8876b", "Directory Readers", False),
)
PAGE = 100  # members per page of a group's transitive members
_ROLE_FILTER = re.compile(r"^roleDefinitionId eq '([0-9a-f-]{36})'$", re.IGNORECASE)
_PATH = "/{version}/roleManagement/directory"


class RoleEndpoints:
    """GET roleDefinitions, roleAssignments and roleEligibilityScheduleInstances (one role per
    request, ``$filter=roleDefinitionId eq '{id}'``, principals expanded), and GET
    /groups/{id}/transitiveMembers/microsoft.graph.user, paged; all on the directory's reads."""

    def __init__(self, ctx: Context, directory: Directory, users: DirectoryEndpoints) -> None:
        self.ctx = ctx
        self.directory = directory
        self.users = users

    def routes(self) -> list[Route]:
        timed = self.users.timed
        return [
            Route(f"{_PATH}/roleDefinitions", timed(self._definitions), methods=["GET"]),
            Route(f"{_PATH}/roleAssignments", timed(self._active), methods=["GET"]),
            Route(
                f"{_PATH}/roleEligibilityScheduleInstances", timed(self._eligible), methods=["GET"]
            ),
            Route(
                "/{version}/groups/{group}/transitiveMembers/microsoft.graph.user",
                timed(self._members),
                methods=["GET"],
            ),
        ]

    def _refused(self, request: Request, denied: bool) -> Response | None:
        if denied and self.ctx.check(request) is None:
            return self.ctx.error(request, 403, "Authorization_RequestDenied", DENIED)
        return self.users.gate(request, write=False)

    async def _definitions(self, request: Request) -> Response:
        refused = self._refused(request, self.ctx.settings.role_read_denied)
        if refused is not None:
            return refused
        value = [
            {"id": rid, "templateId": rid, "displayName": name, "isPrivileged": privileged}
            for rid, name, privileged in ROLES
        ]
        return self.ctx.json(request, {"value": value})

    async def _active(self, request: Request) -> Response:
        return await self._assignments(request, self.ctx.settings.role_holders)

    async def _eligible(self, request: Request) -> Response:
        return await self._assignments(request, self.ctx.settings.eligible_role_holders)

    async def _assignments(self, request: Request, holders: dict[str, list[str]]) -> Response:
        refused = self._refused(request, self.ctx.settings.role_read_denied)
        if refused is not None:
            return refused
        wanted = _ROLE_FILTER.match(request.query_params.get("$filter", ""))
        if wanted is None:  # Graph asks for a filter on the role (or the principal)
            return self.ctx.error(
                request, 400, "Request_UnsupportedQuery", "A filter on roleDefinitionId is required"
            )
        name = next((n for rid, n, _ in ROLES if rid == wanted.group(1).lower()), None)
        value = []
        for holder, roles in holders.items():
            if name in roles:
                value.append(
                    {
                        "id": f"{wanted.group(1)}-{holder}",
                        "roleDefinitionId": wanted.group(1).lower(),
                        "principalId": self._principal(holder)["id"],
                        "directoryScopeId": "/",
                        "principal": self._principal(holder),
                    }
                )
        return self.ctx.json(
            request, {"@odata.context": odata_context(request, "x"), "value": value}
        )

    def _principal(self, holder: str) -> dict[str, Any]:
        if holder.lower().startswith("group:"):
            return {"@odata.type": "#microsoft.graph.group", "id": holder[len("group:") :].lower()}
        user = self.directory.lookup(holder)
        uid = user.id if user is not None else holder.lower()
        return {"@odata.type": "#microsoft.graph.user", "id": uid}

    async def _members(self, request: Request) -> Response:
        refused = self._refused(request, self.ctx.settings.group_read_denied)
        if refused is not None:
            return refused
        group = str(request.path_params["group"]).lower()
        groups = {k.lower(): v for k, v in self.ctx.settings.groups.items()}
        if group not in groups:
            return self.ctx.not_found(request)
        members = self._transitive(group, groups, set())
        start = int(request.query_params.get("$skiptoken", "0") or 0)
        page = members[start : start + PAGE]
        body: dict[str, Any] = {"value": page}
        if start + PAGE < len(members):
            base = str(request.url).split("?", 1)[0]
            body["@odata.nextLink"] = (
                f"{base}?$select=id,userPrincipalName&$skiptoken={start + PAGE}"
            )
        return self.ctx.json(request, body)

    def _transitive(
        self, group: str, groups: dict[str, list[str]], seen: set[str]
    ) -> list[dict[str, Any]]:
        seen.add(group)
        out: dict[str, dict[str, Any]] = {}
        for member in groups.get(group, []):
            if member.lower().startswith("group:"):
                nested = member[len("group:") :].lower()
                if nested not in seen:
                    out.update((m["id"], m) for m in self._transitive(nested, groups, seen))
                continue
            user = self.directory.lookup(member)
            if user is not None:
                out[user.id] = {"id": user.id, "userPrincipalName": user.userPrincipalName}
        return list(out.values())
