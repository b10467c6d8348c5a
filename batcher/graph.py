"""HTTP to Microsoft Graph: the riskyUsers actions, and the only place HTTP errors are mapped."""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import httpx

from batcher import __version__
from batcher.auth import TokenSource
from batcher.clouds import action_url
from batcher.errors import (
    BadRequest,
    Forbidden,
    GraphError,
    NoAnswer,
    Rejected,
    ServerError,
    Throttled,
    Unauthorized,
)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Accepted:
    """A 2xx answer: the action was applied to every ID in the request."""

    status: int
    request_id: str | None
    client_request_id: str


class GraphClient:
    """Posts riskyUsers actions; every non-2xx answer becomes one of the errors in errors.py."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        api_version: str,
        tokens: TokenSource,
    ) -> None:
        self._http = http
        self._base_url = base_url
        self._api_version = api_version
        self._tokens = tokens

    async def post_action(
        self, action: str, user_ids: Sequence[str], client_request_id: str
    ) -> Accepted:
        """POST ``{"userIds": [...]}`` to the action; raise a GraphError for anything but 2xx."""
        url = action_url(self._base_url, self._api_version, action)
        response = await self._send("POST", url, client_request_id, {"userIds": list(user_ids)})
        return Accepted(response.status_code, response.headers.get("request-id"), client_request_id)

    async def list_risky_users(
        self, risk_state: str, client_request_id: str, next_link: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page (up to 500) of riskyUsers in ``risk_state``, and the next page's link."""
        url = next_link or (
            f"{self._base_url.rstrip('/')}/{self._api_version}/identityProtection/riskyUsers"
            f"?$filter=riskState eq '{risk_state}'&$top=500"
        )
        body = (await self._send("GET", url, client_request_id)).json()
        link = body.get("@odata.nextLink")
        return list(body.get("value", [])), link if isinstance(link, str) else None

    async def get_risky_user(self, user_id: str, client_request_id: str) -> dict[str, Any] | None:
        """The riskyUser, or None when Identity Protection has no such user (404)."""
        url = (
            f"{self._base_url.rstrip('/')}/{self._api_version}/identityProtection/riskyUsers/"
            f"{user_id}"
        )
        try:
            response = await self._send("GET", url, client_request_id)
        except Rejected as exc:
            if exc.status == 404:
                return None
            raise
        user = response.json()
        return user if isinstance(user, dict) else None

    async def _send(
        self, method: str, url: str, client_request_id: str, body: Any = None
    ) -> httpx.Response:
        token = await self._tokens.token()
        headers = {
            "Authorization": f"Bearer {token}",
            "client-request-id": client_request_id,
            "return-client-request-id": "true",
            "User-Agent": f"batcher/{__version__}",
        }
        try:
            response = await self._http.request(method, url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise NoAnswer(
                f"no answer in time ({type(exc).__name__})", client_request_id=client_request_id
            ) from None
        except httpx.TransportError as exc:
            raise NoAnswer(
                f"connection failed ({type(exc).__name__}: {exc})",
                client_request_id=client_request_id,
            ) from None
        if response.is_success:
            return response
        error = _to_error(response, client_request_id)
        if isinstance(error, Unauthorized):
            self._tokens.invalidate()  # the next try signs in afresh (see retries.py)
        raise error


def _to_error(response: httpx.Response, client_request_id: str) -> GraphError:
    status = response.status_code
    code, message, inner_request_id = _graph_error_body(response)
    return _error_class(status)(
        f"HTTP {status} {code or response.reason_phrase}: {message or 'no message'}",
        status=status,
        code=code,
        request_id=response.headers.get("request-id") or inner_request_id,
        client_request_id=client_request_id,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _error_class(status: int) -> type[GraphError]:
    if status == 429:
        return Throttled
    if status in RETRYABLE_STATUS or status >= 500:
        return ServerError
    return {400: BadRequest, 401: Unauthorized, 403: Forbidden}.get(status, Rejected)


def _graph_error_body(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    """Graph's ``{"error": {"code", "message", "innerError": {"request-id"}}}``, if present."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, response.text[:200] or None, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    inner = error.get("innerError") or error.get("innererror") or {}
    request_id = inner.get("request-id") if isinstance(inner, dict) else None
    code, message = error.get("code"), error.get("message")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
        request_id if isinstance(request_id, str) else None,
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: seconds, fractional seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # an HTTP date is always GMT, never local time
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None  # NaN, inf guard
