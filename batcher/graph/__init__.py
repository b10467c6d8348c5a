"""HTTP to Microsoft Graph: every endpoint batcher calls, one client, errors mapped in one place."""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from batcher import __version__
from batcher.actions import Action
from batcher.auth import TokenSource
from batcher.errors import GraphError, NoAnswer, NotFound
from batcher.graph.answers import answer_of, error_for, no_answer, parse_retry_after, response_error
from batcher.graph.bearer import BearerAuth
from batcher.graph.requests import (
    INCIDENT_WITH_ALERTS,
    MAX_BATCH,
    MAX_FILTER,
    RISKY_USERS_WHERE,
    SIGN_INS_WHERE,
    USER_FIELDS,
    InnerAnswer,
    InnerRequest,
    action_request,
    literal,
    match_any,
    match_proxy,
    users_query,
)

__all__ = [
    "INCIDENT_WITH_ALERTS",
    "MAX_BATCH",
    "MAX_FILTER",
    "RISKY_USERS_WHERE",
    "SIGN_INS_WHERE",
    "USER_FIELDS",
    "Accepted",
    "BatchAnswer",
    "BearerAuth",
    "GraphClient",
    "InnerAnswer",
    "InnerRequest",
    "action_request",
    "answer_of",
    "error_for",
    "literal",
    "match_any",
    "match_proxy",
    "parse_retry_after",
    "users_query",
]


@dataclass(frozen=True)
class Accepted:
    """A 2xx answer: the request was applied."""

    status: int
    request_id: str | None
    client_request_id: str


@dataclass(frozen=True)
class BatchAnswer:
    """A JSON batch that Graph read (the outer 2xx), with each inner answer to judge alone."""

    status: int
    request_id: str | None
    answers: list[InnerAnswer]

    def per_request(
        self, count: int, client_request_id: str
    ) -> Iterator[tuple[InnerAnswer | None, GraphError | None]]:
        """For each of the ``count`` requests (ids "0", "1", ... in order): its answer and its
        error (None: a 2xx); a request the answer left out has no answer and a NoAnswer."""
        by_ref = {a.id: a for a in self.answers}
        for n in range(count):
            inner = by_ref.get(str(n))
            if inner is None:
                yield None, NoAnswer("the batch's answer left this request out")
            else:
                yield inner, inner.error(client_request_id)


class GraphClient:
    """Graph's endpoints; every non-2xx answer, and every missing one, raises a GraphError."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_version: str) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version

    @property
    def root(self) -> str:
        return f"{self.base_url}/{self.api_version}"

    @property
    def host(self) -> str:
        return httpx.URL(self.base_url).host

    async def post_ids(
        self, action: Action, user_ids: Sequence[str], client_request_id: str
    ) -> Accepted:
        """POST ``{"userIds": [...]}`` to an Identity Protection action."""
        url = self.root + action.path
        response = await self._send("POST", url, client_request_id, {"userIds": list(user_ids)})
        return Accepted(response.status_code, response.headers.get("request-id"), client_request_id)

    async def batch(self, requests: Sequence[InnerRequest], client_request_id: str) -> BatchAnswer:
        """POST a JSON batch of at most 20 requests; each answer is judged on its own."""
        if not 0 < len(requests) <= MAX_BATCH:
            raise ValueError(f"a JSON batch holds 1 to {MAX_BATCH} requests, not {len(requests)}")
        body = {"requests": [r.to_json() for r in requests]}
        response = await self._send("POST", self.root + "/$batch", client_request_id, body)
        answers = []
        for item in _body(response).get("responses", []):
            if isinstance(item, dict):
                answers.append(
                    InnerAnswer(
                        str(item.get("id")),
                        int(item.get("status", 0)),
                        item.get("headers") or {},
                        item.get("body"),
                    )
                )
        return BatchAnswer(response.status_code, response.headers.get("request-id"), answers)

    async def list_risky_users(
        self, risk_state: str, client_request_id: str, next_link: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page (up to 500) of riskyUsers in ``risk_state``, and the next page's link."""
        url = next_link or (
            f"{self.root}/identityProtection/riskyUsers"
            f"?$filter=riskState eq {literal(risk_state)}&$top=500"
        )
        body = _body(await self._send("GET", url, client_request_id))
        link = body.get("@odata.nextLink")
        return list(body.get("value", [])), link if isinstance(link, str) else None

    async def page(
        self, path_or_link: str, client_request_id: str
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a listing (``path_or_link``: a path under the version, or the previous
        page's @odata.nextLink), and the next page's link."""
        url = path_or_link if path_or_link.startswith("http") else self.root + path_or_link
        body = _body(await self._send("GET", url, client_request_id))
        link = body.get("@odata.nextLink")
        value = [v for v in body.get("value", []) if isinstance(v, dict)]
        return value, link if isinstance(link, str) else None

    async def get_risky_user(self, user_id: str, client_request_id: str) -> dict[str, Any] | None:
        """The riskyUser, or None when Identity Protection has no such user (404)."""
        url = f"{self.root}/identityProtection/riskyUsers/{user_id}"
        try:
            response = await self._send("GET", url, client_request_id)
        except NotFound:
            return None
        user = _body(response)
        return user or None

    async def incident_comments(self, incident_id: str, client_request_id: str) -> list[str]:
        """The text of every comment on a Defender XDR incident (they are part of the
        incident resource, ``GET /security/incidents/{id}``)."""
        url = f"{self.root}/security/incidents/{incident_id}"
        comments = _body(await self._send("GET", url, client_request_id)).get("comments")
        if not isinstance(comments, list):
            return []
        return [str(c.get("comment", "")) for c in comments if isinstance(c, dict)]

    async def comment_incident(
        self, incident_id: str, text: str, client_request_id: str
    ) -> str | None:
        """POST one comment on a Defender XDR incident; Graph's request-id of the answer."""
        url = f"{self.root}/security/incidents/{incident_id}/comments"
        body = {"@odata.type": "microsoft.graph.security.alertComment", "comment": text}
        response = await self._send("POST", url, client_request_id, body)
        request_id: str | None = response.headers.get("request-id")
        return request_id

    async def get_json(self, path: str, client_request_id: str) -> dict[str, Any]:
        """GET ``path`` (under the version, or a whole @odata.nextLink): the JSON body."""
        url = path if path.startswith("http") else self.root + path
        return _body(await self._send("GET", url, client_request_id))

    async def organization(self, client_request_id: str) -> list[dict[str, Any]]:
        """The tenant's organization (GET /organization): its verifiedDomains among others."""
        url = f"{self.root}/organization?$select=id,displayName,verifiedDomains"
        body = _body(await self._send("GET", url, client_request_id))
        return [o for o in body.get("value", []) if isinstance(o, dict)]

    async def organization_id(self, client_request_id: str) -> str | None:
        """The ID of the tenant the token signs in to (GET /organization?$select=id), or None
        when the answer names none."""
        body = _body(
            await self._send("GET", self.root + "/organization?$select=id", client_request_id)
        )
        found = [o.get("id") for o in body.get("value", []) if isinstance(o, dict)]
        return found[0] if found and isinstance(found[0], str) and found[0] else None

    async def call(
        self, method: str, path: str, client_request_id: str, body: Any = None
    ) -> dict[str, Any]:
        """One request of its own to ``path`` (relative to the version): its JSON body."""
        return _body(await self._send(method, self.root + path, client_request_id, body))

    async def _send(
        self, method: str, url: str, client_request_id: str, body: Any = None
    ) -> httpx.Response:
        headers = {"client-request-id": client_request_id, "return-client-request-id": "true"}
        try:
            response = await self._http.request(method, url, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise no_answer(exc, url, client_request_id) from None
        if response.is_success:
            return response
        raise response_error(response, client_request_id)


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def http_client(
    tokens: TokenSource,
    *,
    timeout: float,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    connections: int = 100,
) -> httpx.AsyncClient:
    """The HTTP client for Graph: bearer auth, timeouts, TLS trust, proxies from the
    environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), no redirects. ``connections``: as many
    as the run keeps requests in flight, each kept open once made (a request queued for a
    connection costs the pool a scan of every queued one per answer; one closed after each
    answer costs a new connection for the next)."""
    return httpx.AsyncClient(
        auth=BearerAuth(tokens),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        verify=verify,
        transport=transport,
        trust_env=True,
        follow_redirects=False,
        headers={"User-Agent": f"batcher/{__version__}"},
    )


__all__ += ["GraphError", "http_client"]
