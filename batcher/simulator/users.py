"""The directory's endpoints: look users up, block sign-in, reset passwords, revoke sessions."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batcher.simulator.budget import TokenBucket
from batcher.simulator.directory import Directory, DirectoryUser
from batcher.simulator.faults import directory_fault, throttled
from batcher.simulator.query import QueryError, parse_filter, parse_select, project
from batcher.simulator.replies import DENIED, Context, is_inner, odata_context
from batcher.simulator.signin import SIMULATED_TENANT

Handler = Callable[[Request], Awaitable[Response]]

_ONE = ("/{version}/users/{key}", "/{version}/users('{quoted}')")
SYNCED_REFUSED = (
    "Unable to update the specified properties for on-premises mastered Directory Sync objects "
    "or objects currently undergoing migration."
)
TOO_SIMPLE = (
    "The specified password does not comply with password complexity requirements. Please "
    "provide a different password."
)
KINDS = (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())


def complex_enough(password: str) -> bool:
    """Entra's rules: 8 to 256 characters, of at least 3 of the 4 kinds."""
    kinds = sum(any(kind(c) for c in password) for kind in KINDS)
    return 8 <= len(password) <= 256 and kinds >= 3


class DirectoryEndpoints:
    """GET /users, GET/PATCH /users/{key}, POST /users/{key}/revokeSignInSessions, and GET
    /organization (which tenant a token signs in to).

    Reads and writes each spend their own budget (``reads``, ``writes``), never Identity
    Protection's; ``clock`` dates revoked sessions, ``budget_clock`` drives the budgets.
    """

    def __init__(
        self,
        ctx: Context,
        directory: Directory,
        clock: Callable[[], float],
        budget_clock: Callable[[], float],
    ) -> None:
        self.ctx = ctx
        self.directory = directory
        self.clock = clock
        settings = ctx.settings
        read_rate = settings.directory_reads_per_second
        read_burst = settings.directory_reads_burst or max(1, math.ceil(read_rate))
        self.reads = TokenBucket(read_rate, read_burst, clock=budget_clock)
        self.writes = TokenBucket(  # Graph's write window: a burst of 3,000, then 20 a second
            settings.directory_writes_per_second,
            settings.directory_writes_burst,
            clock=budget_clock,
        )

    def routes(self) -> list[Route]:
        timed = self.timed
        return [
            Route("/{version}/users", timed(self._list), methods=["GET"]),
            Route("/{version}/organization", timed(self._organization), methods=["GET"]),
            *(Route(path, timed(self._get), methods=["GET"]) for path in _ONE),
            *(Route(path, timed(self._update), methods=["PATCH"]) for path in _ONE),
            *(
                Route(f"{path}/revokeSignInSessions", timed(self._revoke), methods=["POST"])
                for path in _ONE
            ),
        ]

    def timed(self, handler: Handler) -> Handler:
        """A request of its own takes Graph's latency (latency_min/max_seconds); one inside
        a $batch does not: the batch took it once for all of them."""

        async def answer(request: Request) -> Response:
            if not is_inner(request):
                low, high = (
                    self.ctx.settings.latency_min_seconds,
                    self.ctx.settings.latency_max_seconds,
                )
                await anyio.sleep(self.ctx.random.uniform(low, high))
            return await handler(request)

        return answer

    def gate(self, request: Request, *, write: bool) -> Response | None:
        """Version, bearer token, permission, budget and faults, in Graph's order."""
        ctx, settings = self.ctx, self.ctx.settings
        refused = ctx.check(request)
        if refused is not None:
            return refused
        if not write:
            ctx.record.directory_reads += 1
        if settings.directory_write_denied if write else settings.directory_read_denied:
            return ctx.error(request, 403, "Authorization_RequestDenied", DENIED)
        bucket = self.writes if write else self.reads
        if not bucket.take():
            least = settings.retry_after_least_seconds
            return throttled(ctx, request, retry_after=bucket.retry_after(least))
        return directory_fault(ctx, request)

    # -- reads -----------------------------------------------------------------------------------
    async def _list(self, request: Request) -> Response:
        query = request.query_params
        text = query.get("$filter")
        if text is not None:
            self.ctx.record.filters.append(text)
        refused = self.gate(request, write=False)
        if refused is not None:
            return refused
        eventual = request.headers.get("consistencylevel", "").lower() == "eventual"
        count = query.get("$count", "").lower() == "true"
        try:
            if count and not eventual:
                raise QueryError("Request_BadRequest", "$count is not currently supported.")
            select = parse_select(query.get("$select"))
            clauses = None if text is None else parse_filter(text, advanced=count and eventual)
        except QueryError as exc:
            return self.ctx.error(request, 400, exc.code, exc.message)
        if clauses is None:
            users = list(self.directory)
        else:
            found = (
                u for c in clauses for v in c.values for u in self.directory.find_all(c.name, v)
            )
            users = list({u.id: u for u in found}.values())
        body: dict[str, Any] = {"@odata.context": odata_context(request, "users")}
        if count:
            body["@odata.count"] = len(users)
        body["value"] = [self._shown(user, select) for user in users]
        return self.ctx.json(request, body)

    async def _organization(self, request: Request) -> Response:
        """GET /organization: the one organization, the tenant signed in to (a directory read);
        ``$select`` picks among id, displayName and verifiedDomains (the gate asks for the
        default one)."""
        self.ctx.record.tenant_reads += 1
        refused = self.gate(request, write=False)
        if refused is not None:
            return refused
        tenant = {
            "id": SIMULATED_TENANT,
            "displayName": "Simulated tenant",
            "verifiedDomains": verified_domains(self.ctx.settings.primary_domain),
        }
        wanted = request.query_params.get("$select")
        names = (
            ["id", *(n.strip() for n in wanted.split(",") if n.strip())] if wanted else list(tenant)
        )
        unknown = [n for n in names if n not in tenant]
        if unknown:
            message = f"Could not find a property named '{unknown[0]}' on type 'organization'."
            return self.ctx.error(request, 400, "BadRequest", message)
        body = {
            "@odata.context": odata_context(request, "organization"),
            "value": [{n: tenant[n] for n in dict.fromkeys(names)}],
        }
        return self.ctx.json(request, body)

    async def _get(self, request: Request) -> Response:
        refused = self.gate(request, write=False)
        if refused is not None:
            return refused
        try:
            select = parse_select(request.query_params.get("$select"))
        except QueryError as exc:
            return self.ctx.error(request, 400, exc.code, exc.message)
        user = self._target(request)
        if not isinstance(user, DirectoryUser):
            return user
        shown = self._shown(user, select)
        body = {"@odata.context": odata_context(request, "users/$entity"), **shown}
        return self.ctx.json(request, body)

    def _shown(self, user: DirectoryUser, select: tuple[str, ...]) -> dict[str, Any]:
        """The user's selected properties, less those the settings say answers lack."""
        omitted = self.ctx.settings.omit_properties
        return {k: v for k, v in project(user, select).items() if k not in omitted}

    def _key(self, request: Request) -> str:
        """The object ID or UPN a URL names: /users/{key} or /users('{key}') (quotes doubled)."""
        if "quoted" in request.path_params:
            return str(request.path_params["quoted"]).replace("''", "'")
        key = str(request.path_params["key"])
        if key.startswith("$"):
            raise QueryError(
                "BadRequest",
                f"Resource not found for the segment '{key}'; a userPrincipalName that starts "
                f"with $ is written /users('{key}').",
            )
        return key

    def _user(self, request: Request) -> DirectoryUser | None:
        return self.directory.lookup(self._key(request))

    def _target(self, request: Request) -> DirectoryUser | Response:
        """The user a URL names, or the answer when there is none (400 for a bad key, 404)."""
        try:
            user = self._user(request)
        except QueryError as exc:
            return self.ctx.error(request, 400, exc.code, exc.message)
        return self._not_found(request) if user is None else user

    def _not_found(self, request: Request) -> Response:
        key = request.path_params.get("key") or request.path_params.get("quoted")
        return self.ctx.error(
            request,
            404,
            "Request_ResourceNotFound",
            f"Resource '{key}' does not exist or one of its queried reference-property objects "
            "are not present.",
        )

    # -- writes ----------------------------------------------------------------------------------
    async def _update(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and "passwordProfile" in body:
            response = self._reset_password(request, body)
            self._wrote(request, "reset", response.status_code)
            return response
        enabled = body.get("accountEnabled") if isinstance(body, dict) else None
        response = await self._set_enabled(request, body, enabled)
        if isinstance(enabled, bool):
            self._wrote(request, "enable" if enabled else "disable", response.status_code)
        return response

    async def _set_enabled(self, request: Request, body: Any, enabled: object) -> Response:
        """``enabled``: the body's accountEnabled (None when the body is no JSON object)."""
        ctx = self.ctx
        refused = self.gate(request, write=True)
        if refused is not None:
            return refused
        if body is None:
            return ctx.error(request, 400, "BadRequest", "Unable to read JSON request payload.")
        if not isinstance(enabled, bool):
            message = "Invalid value specified for property 'accountEnabled' of resource 'User'."
            return ctx.error(request, 400, "Request_BadRequest", message)
        # annotations (the SDKs send "@odata.type") are not properties: Graph accepts them
        others = sorted(k for k in set(body) - {"accountEnabled"} if not k.startswith("@odata."))
        if others:
            message = f"The simulator changes only accountEnabled, not {', '.join(others)}."
            return ctx.error(request, 400, "Request_BadRequest", message)
        user = self._target(request)
        if not isinstance(user, DirectoryUser):
            return user
        if user.privileged and not ctx.settings.caller_privileged:
            return ctx.error(request, 403, "Authorization_RequestDenied", DENIED)
        user.accountEnabled = enabled
        return ctx.empty(request, 204)

    def _reset_password(self, request: Request, body: dict[str, Any]) -> Response:
        """PATCH passwordProfile: Entra's complexity rules, synced users refused (their password
        is mastered on-premises), an administrator's only by a privileged caller. The password
        is kept only in memory (``record.passwords``), for tests; never in an answer."""
        ctx = self.ctx
        refused = self.gate(request, write=True)
        if refused is not None:
            return refused
        profile = body.get("passwordProfile")
        others = sorted(set(body) - {"passwordProfile"})
        password = profile.get("password") if isinstance(profile, dict) else None
        if others or not isinstance(password, str):
            message = "Invalid value specified for property 'passwordProfile' of resource 'User'."
            return ctx.error(request, 400, "Request_BadRequest", message)
        user = self._target(request)
        if not isinstance(user, DirectoryUser):
            return user
        if user.onPremisesSyncEnabled:
            return ctx.error(request, 400, "Request_BadRequest", SYNCED_REFUSED)
        if user.privileged and not ctx.settings.caller_privileged:
            return ctx.error(request, 403, "Authorization_RequestDenied", DENIED)
        if not complex_enough(password):
            return ctx.error(request, 400, "Request_BadRequest", TOO_SIMPLE)
        now = datetime.fromtimestamp(self.clock(), UTC)
        user.lastPasswordChangeDateTime = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        force = bool(profile.get("forceChangePasswordNextSignIn")) if profile else False
        ctx.record.set_password(user.id, password, force)
        return ctx.empty(request, 204)

    async def _revoke(self, request: Request) -> Response:
        response = await self._revoke_sessions(request)
        self._wrote(request, "revoke", response.status_code)
        return response

    async def _revoke_sessions(self, request: Request) -> Response:
        ctx = self.ctx
        refused = self.gate(request, write=True)
        if refused is not None:
            return refused
        user = self._target(request)
        if not isinstance(user, DirectoryUser):
            return user
        if user.userType == "Guest":  # Graph answers, but a guest's home tenant holds the sessions
            ctx.record.revoked_guests.append(user.id)
        else:
            now = datetime.fromtimestamp(self.clock(), UTC)
            user.signInSessionsValidFromDateTime = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        if ctx.settings.revoke_answers_204:
            return ctx.empty(request, 204)
        body = {"@odata.context": odata_context(request, "Edm.Boolean"), "value": True}
        return ctx.json(request, body)

    def _wrote(self, request: Request, op: str, status: int) -> None:
        try:
            key = self._key(request)
        except QueryError:
            key = str(request.path_params["key"])
        user = self.directory.peek(key)
        self.ctx.record.wrote(op, user.id if user else key.lower(), status)


def verified_domains(primary: str) -> list[dict[str, object]]:
    """The tenant's verified domains: ``primary`` is the default; the initial
    .onmicrosoft.com domain is always there."""
    initial = primary if primary.endswith(".onmicrosoft.com") else "contoso.onmicrosoft.com"
    domains: list[dict[str, object]] = [
        {"name": primary, "isDefault": True, "isInitial": primary == initial}
    ]
    if initial != primary:
        domains.append({"name": initial, "isDefault": False, "isInitial": True})
    return domains
