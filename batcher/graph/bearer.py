"""The bearer token on every Graph request, as an httpx auth flow: a 401 gets one fresh sign-in."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import httpx

from batcher.auth import TokenSource
from batcher.errors import AuthError
from batcher.graph.answers import response_error


class BearerAuth(httpx.Auth):
    """Sets ``Authorization: Bearer``. After a 401 it signs in afresh once and sends the request
    again; a second 401, or a 401 for a token that cannot be renewed, raises AuthError: signing
    in again cannot fix it, so the run stops (everything unsent stays resumable)."""

    requires_response_body = True  # the 401's body names Graph's error code

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self._tokens.token()}"
        response = yield request
        if response.status_code != 401:
            return
        await response.aread()  # overriding async_auth_flow skips requires_response_body
        self._tokens.invalidate()
        if self._tokens.refused_after_refresh:  # a static token: there is no other
            raise AuthError(_refused(response, "refused the token, which cannot be renewed"))
        request.headers["Authorization"] = f"Bearer {await self._tokens.token()}"
        response = yield request
        if response.status_code == 401:
            await response.aread()
            self._tokens.invalidate()
            raise AuthError(_refused(response, "refused the token twice, even after a refresh"))


def _refused(response: httpx.Response, what: str) -> str:
    error = response_error(response, response.request.headers.get("client-request-id", ""))
    return (
        f"Graph {what} (401 {error.code or 'Unauthorized'}, request-id "
        f"{error.request_id or 'none'}); sign in again or get a fresh token for this tenant's "
        "Graph, then run the same command"
    )
