"""Defender XDR incidents' comments: kept per incident (shown on the incident), POST adds one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batcher.simulator.replies import Context

# The incidents the simulated tenant has; any other ID is Graph's 404.
INCIDENTS = ("2972395", "2972396", "2972397")
COMMENT_TYPE = "microsoft.graph.security.alertComment"


class IncidentComments:
    """The comments of each incident the tenant has (Graph keeps them on the incident resource:
    ``GET /security/incidents/{id}``, served by ``Security``, shows them); ``POST
    .../comments`` adds one and answers the list."""

    def __init__(self, ctx: Context, incidents: tuple[str, ...] = INCIDENTS) -> None:
        self.ctx = ctx
        self.comments: dict[str, list[dict[str, Any]]] = {i: [] for i in incidents}

    def routes(self) -> list[Route]:
        return [
            Route(
                "/{version}/security/incidents/{incident_id}/comments", self._post, methods=["POST"]
            )
        ]

    async def _post(self, request: Request) -> Response:
        refused = self.ctx.check(request)
        if refused is not None:
            return refused
        incident_id = request.path_params["incident_id"]
        if incident_id not in self.comments:
            return self.ctx.not_found(request)
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        text = body.get("comment") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return self.ctx.error(request, 400, "BadRequest", "The comment must not be empty.")
        self.comments[incident_id].append(
            {
                "@odata.type": "#" + COMMENT_TYPE,
                "comment": text,
                "createdByDisplayName": "batcher",
                "createdDateTime": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        return self.ctx.json(request, {"value": self.comments[incident_id]})
