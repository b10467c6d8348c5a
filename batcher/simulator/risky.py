"""Identity Protection: the riskyUsers actions (confirmCompromised, dismiss) and reads."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batcher.inputs import GUID
from batcher.simulator.budget import TokenBucket
from batcher.simulator.directory import derived_id
from batcher.simulator.faults import answer_fault, draw, dropped, throttled
from batcher.simulator.record import ACTIONS
from batcher.simulator.replies import DENIED, Context, is_inner

MAX_IDS_PER_CALL = 60
_RISK_DETAIL = {
    "confirmedCompromised": "adminConfirmedUserCompromised",
    "dismissed": "adminDismissedAllRiskForUser",
}


def risky_upns(level: str, count: int) -> list[str]:
    """The UPNs of the ``count`` users seeded at risk at ``level``."""
    return [f"risky-{level}-{n:05d}@contoso.com" for n in range(count)]


class RiskyUsers:
    """The riskyUsers endpoints, spending the tenant's Identity Protection budget (``bucket``).

    Faults (``faults``) are drawn for direct actions; inside a $batch the outer call drew them.
    """

    def __init__(self, ctx: Context, bucket: TokenBucket) -> None:
        self.ctx = ctx
        self.bucket = bucket
        self._bad_ids = {i.lower() for i in ctx.settings.bad_ids}
        # users Identity Protection holds at risk before any feedback: id -> riskLevel
        self.seeded = {
            derived_id(upn): level
            for level, count in ctx.settings.risky_users.items()
            for upn in risky_upns(level, count)
        }

    def routes(self) -> list[Route]:
        base = "/{version}/identityProtection/riskyUsers"
        return [
            Route(base + "/{action}", self._action, methods=["POST"]),
            Route("/beta/riskyUsers/{action}", self._action, methods=["POST"]),
            Route(base, self._list, methods=["GET"]),
            Route(base + "/{user_id}", self._get, methods=["GET"]),
        ]

    async def _action(self, request: Request) -> Response:
        ctx, settings = self.ctx, self.ctx.settings
        if request.path_params["action"] not in ACTIONS:
            return ctx.not_found(request)
        refused = self._spend(request, denied=settings.permission_denied)
        if refused is not None:
            return refused
        fault = None if is_inner(request) else draw(ctx.random, settings.faults)
        response = await answer_fault(ctx, request, fault)
        if response is not None:
            return response
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return ctx.error(request, 400, "BadRequest", "Unable to read JSON request payload.")
        ids = body.get("userIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            return ctx.error(request, 400, "invalidRequest", "userIds is required.")
        if len(ids) > MAX_IDS_PER_CALL:
            message = f"The number of userIds exceeds the limit of {MAX_IDS_PER_CALL}."
            return ctx.error(request, 400, "invalidRequest", message)
        for uid in ids:
            if not isinstance(uid, str) or not GUID.match(uid) or uid.lower() in self._bad_ids:
                message = "One or more user IDs are invalid."
                return ctx.error(request, 400, "invalidRequest", message)
        low, high = settings.latency_min_seconds, settings.latency_max_seconds
        await anyio.sleep(ctx.random.uniform(low, high))
        action = request.path_params["action"]
        ctx.record.apply(action, ids, ACTIONS[action])
        if fault == "lost":
            return dropped(ctx)
        return ctx.empty(request, 204)

    # -- reads: what verify asks -----------------------------------------------------------------
    def _risky_user(self, user_id: str) -> dict[str, Any] | None:
        """The user as Identity Protection shows it: feedback applies after processing_seconds."""
        record = self.ctx.record
        state = record.risk_state.get(user_id)
        level = self.seeded.get(user_id)
        if state is None and level is not None:
            return {
                "id": user_id,
                "isDeleted": False,
                "isProcessing": False,
                "riskLevel": level,
                "riskState": "atRisk",
                "riskDetail": "none",
                "userPrincipalName": None,
            }
        if state is None:
            return None
        waited = time.monotonic() - record.applied_at.get(user_id, 0.0)
        processing = waited < self.ctx.settings.processing_seconds
        shown = "atRisk" if processing else state
        return {
            "id": user_id,
            "isDeleted": False,
            "isProcessing": processing,
            "riskLevel": "high" if shown == ACTIONS["confirmCompromised"] else level or "none",
            "riskState": shown,
            "riskDetail": _RISK_DETAIL.get(shown, "none"),
            "riskLastUpdatedDateTime": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _spend(self, request: Request, *, denied: bool) -> Response | None:
        """Context.check (version, bearer token), a 403 if ``denied``, then one request of the
        budget spent (a 429 when it is empty); None when the request goes on."""
        refused = self.ctx.check(request)
        if refused is not None:
            return refused
        if denied:
            return self.ctx.error(request, 403, "Authorization_RequestDenied", DENIED)
        if not self.bucket.take():
            return throttled(self.ctx, request)
        return None

    def _read_gate(self, request: Request) -> Response | None:
        """Reads pass the same checks, and spend the same budget, as actions (permission_denied
        refuses actions only)."""
        refused = self._spend(request, denied=False)
        if refused is None:
            self.ctx.record.read()
        return refused

    async def _list(self, request: Request) -> Response:
        if "risky_users" in self.ctx.settings.sources_denied:
            return self.ctx.check(request) or self.ctx.error(
                request, 403, "Authorization_RequestDenied", DENIED
            )
        refused = self._read_gate(request)
        if refused is not None:
            return refused
        text = request.query_params.get("$filter", "")
        states = re.findall(r"riskState\s+eq\s+'(\w+)'", text)
        levels = set(re.findall(r"riskLevel\s+eq\s+'(\w+)'", text))
        top = min(500, max(1, int(request.query_params.get("$top", "20") or 20)))
        skip = int(request.query_params.get("$skiptoken", "0") or 0)
        record = self.ctx.record
        known = sorted(set(record.risk_state) | set(self.seeded))
        users = [u for uid in known if (u := self._risky_user(uid))]
        if states:
            users = [u for u in users if u["riskState"] in states]
        if levels:
            users = [u for u in users if u["riskLevel"] in levels]
        page = users[skip : skip + top]
        body: dict[str, Any] = {"value": page}
        if skip + top < len(users):
            query = {k: v for k, v in request.query_params.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(skip + top)
            body["@odata.nextLink"] = str(request.url.replace(query=urlencode(query)))
        return self.ctx.json(request, body)

    async def _get(self, request: Request) -> Response:
        refused = self._read_gate(request)
        if refused is not None:
            return refused
        user = self._risky_user(request.path_params["user_id"].lower())
        if user is None:
            return self.ctx.error(request, 404, "ResourceNotFound", "Resource not found.")
        return self.ctx.json(request, user)
