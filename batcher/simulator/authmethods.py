"""Users' authentication methods: listed, and deleted per kind, on the reports budget."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batcher.simulator.budget import TokenBucket
from batcher.simulator.faults import directory_fault, throttled
from batcher.simulator.replies import Context

GRAPH = "#microsoft.graph."
PASSWORD_ID = "28c10230-6103-485e-b985-444c60001490"  # Graph's fixed ID of the password method
DEFAULT_REFUSED = (
    "Cannot delete default method with other methods configured. Please change default method "
    "before deletion."
)
# Each user's methods, made from their ID: the password, a default mobile phone, the
# Authenticator app, an e-mail, and (for every other user) a FIDO2 key, registered a day apart
_KINDS = ("phone", "microsoftAuthenticator", "email", "fido2")


def _methods_of(user_id: str) -> list[dict[str, Any]]:
    seed = int(hashlib.sha256(user_id.encode()).hexdigest()[:8], 16)
    methods: list[dict[str, Any]] = [
        {
            "@odata.type": GRAPH + "passwordAuthenticationMethod",
            "id": PASSWORD_ID,
            "createdDateTime": None,
        }
    ]
    for n, kind in enumerate(_KINDS[: 3 + seed % 2]):
        method: dict[str, Any] = {
            "@odata.type": f"{GRAPH}{kind}AuthenticationMethod",
            "id": f"{kind}-{user_id[:8]}-{n}",
            "createdDateTime": f"2026-11-{20 + n:02d}T10:00:00Z",
        }
        if kind == "phone":
            method |= {
                "phoneNumber": f"+1 425555{seed % 10000:04d}",
                "phoneType": "mobile",
                "createdDateTime": None,
            }  # Graph gives phones no registration time
        elif kind == "email":
            method["emailAddress"] = f"{user_id[:6]}@fabrikam.example"
        else:
            method["displayName"] = f"{kind} of {user_id[:6]}"
        methods.append(method)
    return methods


class AuthMethods:
    """GET /users/{id}/authentication/methods; DELETE .../{kind}Methods/{methodId}. The
    password cannot be deleted; a default phone is refused (400) while others remain. They
    spend the tenant's reports budget, ``reports``, which the sign-in logs spend too."""

    def __init__(self, ctx: Context, reports: TokenBucket) -> None:
        self.ctx = ctx
        self.budget = reports
        self.methods: dict[str, list[dict[str, Any]]] = {}
        self.deleted: list[tuple[str, str]] = []  # (user, method) each time one was deleted
        self.deleted_at: list[float] = []  # time.monotonic() of each, in the same order
        self.lists = 0
        self.listed_at: list[float] = []  # time.monotonic() of each list answered
        self.refused: set[str] = set()  # users whose methods this app may not read (403)

    def routes(self) -> list[Route]:
        base = "/{version}/users/{key}/authentication"
        return [
            Route(base + "/methods", self._list, methods=["GET"]),
            Route(base + "/{kind}Methods/{method_id}", self._delete, methods=["DELETE"]),
        ]

    def of(self, user_id: str) -> list[dict[str, Any]]:
        return self.methods.setdefault(user_id.lower(), _methods_of(user_id.lower()))

    def _gate(self, request: Request) -> Response | None:
        refused = self.ctx.check(request)
        if refused is not None:
            return refused
        least = self.ctx.settings.retry_after_least_seconds
        if not self.budget.take():
            return throttled(self.ctx, request, retry_after=self.budget.retry_after(least))
        return directory_fault(self.ctx, request)

    async def _list(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        if request.path_params["key"].lower() in self.refused:
            return self.ctx.error(request, 403, "accessDenied", "Request Authorization failed")
        self.lists += 1
        self.listed_at.append(time.monotonic())
        return self.ctx.json(request, {"value": self.of(request.path_params["key"])})

    async def _delete(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        user_id, kind = request.path_params["key"].lower(), request.path_params["kind"]
        methods = self.of(user_id)
        wanted = request.path_params["method_id"]
        found = next((m for m in methods if m["id"] == wanted), None)
        if found is None or found["@odata.type"] != f"{GRAPH}{kind}AuthenticationMethod":
            return self.ctx.error(request, 404, "itemNotFound", "The method was not found.")
        if kind == "password":
            return self.ctx.error(request, 400, "badRequest", "The password cannot be deleted.")
        others = [m for m in methods if m is not found and "password" not in m["@odata.type"]]
        if kind == "phone" and others:
            return self.ctx.error(request, 400, "badRequest", DEFAULT_REFUSED)
        methods.remove(found)
        self.deleted.append((user_id, wanted))
        self.deleted_at.append(time.monotonic())
        return self.ctx.empty(request, 204)
