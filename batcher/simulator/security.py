"""Sources read straight from Graph: Defender XDR incidents with their alerts' evidence, and
the sign-in logs (on the reports budget, 5 requests per 10 s), each with its 403 to rehearse."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batcher.simulator.budget import TokenBucket
from batcher.simulator.directory import derived_id
from batcher.simulator.faults import throttled
from batcher.simulator.replies import DENIED, Context

DOMAIN = "contoso.com"
_EVIDENCE = "#microsoft.graph.security."


def _account(upn: str, *, with_id: bool = True, sid: str | None = None) -> dict[str, Any]:
    name, domain = upn.split("@")
    return {
        "azureAdUserId": derived_id(upn) if with_id else None,
        "userPrincipalName": upn,
        "accountName": name,
        "domainName": domain,
        "userSid": sid,
    }


def sample_incident(number: int) -> dict[str, Any]:
    """Incident ``number``: two alerts, each evidence kind, and evidence that is no user."""
    alert_ids = [f"da63{number:04d}{n:024x}" for n in (1, 2)]
    sid = f"S-1-5-21-1004336348-1177238915-682003330-{5000 + number}"
    first = [
        {
            "@odata.type": _EVIDENCE + "userEvidence",
            "userAccount": _account(f"ann.{number}@{DOMAIN}"),
        },
        {  # no object ID: the UPN identifies the user
            "@odata.type": _EVIDENCE + "userEvidence",
            "userAccount": _account(f"ben.{number}@{DOMAIN}", with_id=False),
        },
        {  # only the on-premises SID
            "@odata.type": _EVIDENCE + "userEvidence",
            "userAccount": {"accountName": "cy", "domainName": "CORP", "userSid": sid},
        },
        {"@odata.type": _EVIDENCE + "ipEvidence", "ipAddress": "203.0.113.7"},
    ]
    second = [
        {
            "@odata.type": _EVIDENCE + "mailboxEvidence",
            "primaryAddress": f"dee.{number}@{DOMAIN}",
            "displayName": "Dee",
            "userAccount": _account(f"dee.{number}@{DOMAIN}"),
        },
        *(
            {
                "@odata.type": _EVIDENCE + "analyzedMessageEvidence",
                "recipientEmailAddress": f"{who}.{number}@{DOMAIN}",
                "subject": "Invoice overdue",
            }
            for who in ("eve", "fay")
        ),
        {
            "@odata.type": _EVIDENCE + "userEvidence",
            "userAccount": _account(f"ann.{number}@{DOMAIN}"),
        },
    ]
    return {
        "id": str(number),
        "displayName": f"Sample incident {number}: phishing leading to account takeover",
        "status": "active",
        "alerts": [
            {"id": alert_ids[0], "title": "Suspicious sign-in", "evidence": first},
            {"id": alert_ids[1], "title": "Phishing delivered", "evidence": second},
        ],
    }


def sign_in_users(address: str, count: int) -> list[str]:
    """The UPNs that signed in successfully from ``address`` (``count`` of them)."""
    label = re.sub(r"[^0-9a-z]+", "-", address.lower()).strip("-")
    return [f"signin-{label}-{n:05d}@{DOMAIN}" for n in range(count)]


class Security:
    """GET /security/incidents/{id} (with $expand=alerts) and GET /auditLogs/signIns."""

    def __init__(
        self, ctx: Context, reports: TokenBucket, comments: dict[str, list[dict[str, Any]]]
    ) -> None:
        self.ctx = ctx
        self.reports = reports
        self.comments = comments  # per incident ID, shown on the incident as Graph does
        self.incidents = {n: sample_incident(n) for n in ctx.settings.incidents}
        self.sign_ins = self._sign_ins()

    def routes(self) -> list[Route]:
        return [
            Route("/{version}/security/incidents/{incident_id}", self._incident, methods=["GET"]),
            Route("/{version}/auditLogs/signIns", self._signins, methods=["GET"]),
        ]

    def _sign_ins(self) -> list[dict[str, Any]]:
        """Each user's successful sign-in from its address, spread over the last 48 hours,
        newest first, and one failed attempt per address."""
        now = datetime.now(UTC).replace(microsecond=0)
        rows = []
        for address, count in self.ctx.settings.sign_ins.items():
            for n, upn in enumerate(sign_in_users(address, count)):
                when = now - timedelta(minutes=(n * 7) % (48 * 60) + 1)
                rows.append(_sign_in(address, upn, when, 0))
            rows.append(_sign_in(address, f"failed@{DOMAIN}", now - timedelta(hours=1), 50126))
        return sorted(rows, key=lambda r: str(r["createdDateTime"]), reverse=True)

    def _refused(self, request: Request, source: str) -> Response | None:
        refused = self.ctx.check(request)
        if refused is None and source in self.ctx.settings.sources_denied:
            refused = self.ctx.error(request, 403, "Authorization_RequestDenied", DENIED)
        return refused

    async def _incident(self, request: Request) -> Response:
        refused = self._refused(request, "incidents")
        if refused is not None:
            return refused
        raw = request.path_params["incident_id"]
        incident = self.incidents.get(int(raw)) if raw.isdigit() else None
        if incident is None and raw in self.comments:  # an incident with no user evidence
            incident = {"id": raw, "status": "active", "alerts": []}
        if incident is None:
            return self.ctx.error(request, 404, "NotFound", f"Incident {raw} was not found.")
        self.ctx.record.read()
        shown = {**incident, "comments": self.comments.get(raw, [])}
        if "alerts" not in request.query_params.get("$expand", ""):
            shown.pop("alerts")
        return self.ctx.json(request, shown)

    async def _signins(self, request: Request) -> Response:
        refused = self._refused(request, "sign_ins")
        if refused is not None:
            return refused
        if not self.reports.take():
            return throttled(self.ctx, request)
        self.ctx.record.read()
        try:
            wanted = _SignInFilter.parse(request.query_params.get("$filter", ""))
        except ValueError as exc:
            return self.ctx.error(request, 400, "BadRequest", str(exc))
        page_size = min(
            self.ctx.settings.sign_ins_page_size, int(request.query_params.get("$top", "1000"))
        )
        skip = int(request.query_params.get("$skiptoken", "0") or 0)
        rows = [r for r in self.sign_ins if wanted.matches(r)]
        body: dict[str, Any] = {"value": rows[skip : skip + page_size]}
        if skip + page_size < len(rows):
            query = {k: v for k, v in request.query_params.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(skip + page_size)
            body["@odata.nextLink"] = str(request.url.replace(query=urlencode(query)))
        return self.ctx.json(request, body)


def _sign_in(address: str, upn: str, when: datetime, code: int) -> dict[str, Any]:
    return {
        "id": derived_id(f"{upn}/{address}/{when.isoformat()}"),
        "createdDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "userPrincipalName": upn,
        "userId": derived_id(upn),
        "ipAddress": address,
        "status": {"errorCode": code},
    }


_IP_EQ = re.compile(r"ipAddress\s+eq\s+'([^']*)'")
_IP_STARTS = re.compile(r"startswith\(\s*ipAddress\s*,\s*'([^']*)'\s*\)")
_SINCE = re.compile(r"createdDateTime\s+ge\s+(\S+?Z)")
_STATUS = re.compile(r"status/errorCode\s+eq\s+(\d+)")


class _SignInFilter:
    """The part of OData $filter the sign-in logs take that batcher sends."""

    def __init__(
        self, exact: set[str], prefixes: list[str], since: datetime | None, code: int | None
    ) -> None:
        self.exact, self.prefixes, self.since, self.code = exact, prefixes, since, code

    @classmethod
    def parse(cls, text: str) -> _SignInFilter:
        since = _SINCE.search(text)
        code = _STATUS.search(text)
        try:
            start = datetime.fromisoformat(since.group(1).replace("Z", "+00:00")) if since else None
        except ValueError:
            raise ValueError(f"Invalid filter clause: {text}") from None
        return cls(
            set(_IP_EQ.findall(text)),
            _IP_STARTS.findall(text),
            start,
            int(code.group(1)) if code else None,
        )

    def matches(self, row: dict[str, Any]) -> bool:
        address = str(row["ipAddress"])
        if (self.exact or self.prefixes) and not (
            address in self.exact or any(address.startswith(p) for p in self.prefixes)
        ):
            return False
        created = datetime.fromisoformat(str(row["createdDateTime"]).replace("Z", "+00:00"))
        if self.since is not None and created < self.since:
            return False
        return self.code is None or row["status"]["errorCode"] == self.code
