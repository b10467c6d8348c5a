"""The simulator's Entra ID side: token endpoints for every sign-in method batcher supports."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from batcher.auth import SIMULATOR_DELEGATED_TOKEN, SIMULATOR_TOKEN
from batcher.config import SimulatorSettings

SIMULATED_TENANT = "00000000-0000-4000-8000-000000000001"


class SimulatedSignIn:
    """Issues tokens (client secret, certificate assertion, device code, refresh token, App
    Service managed identity), remembers each one's expiry, and tells Graph which it accepts."""

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        tokens: set[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._tokens: dict[str, float | None] = dict.fromkeys(
            tokens or {SIMULATOR_TOKEN, SIMULATOR_DELEGATED_TOKEN}
        )
        self.issued: list[Issued] = []
        self._device_codes: dict[str, _Grant] = {}
        self._refresh_tokens: dict[str, _Grant] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            Route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                self._openid_configuration,
                methods=["GET"],
            ),
            Route("/{tenant}/oauth2/v2.0/devicecode", self._device_code, methods=["POST"]),
            Route("/msi/token", self._managed_identity, methods=["GET"]),
        ]

    def check_bearer(self, authorization: str) -> str | None:
        """Why Graph would refuse this Authorization header, or None when the token is good."""
        token = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else ""
        if token not in self._tokens:
            return "Access token is empty or invalid."
        expires = self._tokens[token]
        if expires is not None and self.clock() >= expires:
            return "Lifetime validation failed, the token is expired."
        return None

    async def _openid_configuration(self, request: Request) -> Response:
        """What MSAL reads before it signs in to an authority it was told not to look up."""
        base = f"{request.url.scheme}://{request.url.netloc}/{request.path_params['tenant']}"
        return JSONResponse(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            }
        )

    async def _token(self, request: Request) -> Response:
        # Parsed by hand: Starlette's request.form() needs python-multipart, not a dependency.
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        tenant = request.path_params["tenant"]
        grant = form.get("grant_type")
        if grant == "client_credentials":
            refused = self._check_client(form)
            if refused is not None:
                return refused
            scope = form.get("scope", "")
            if not scope.endswith("/.default"):
                return _sign_in_error(
                    400,
                    "invalid_scope",
                    "AADSTS1002012: The provided value for scope is not valid. Client credential "
                    "flows must have a scope value with /.default suffixed to the resource "
                    "identifier (application ID URI).",
                )
            how = "certificate" if "client_assertion" in form else "secret"
            return self._issue(_Grant(tenant, form.get("client_id", ""), scope), how)
        if grant == _DEVICE_CODE_GRANT:
            pending = self._device_codes.pop(form.get("device_code", ""), None)
            if pending is None:
                return _sign_in_error(
                    400, "expired_token", "AADSTS70019: Verification code expired."
                )
            return self._issue(pending, "device_code", user=True)
        if grant == "refresh_token":
            earlier = self._refresh_tokens.pop(form.get("refresh_token", ""), None)
            if earlier is None:
                return _sign_in_error(
                    400,
                    "invalid_grant",
                    "AADSTS700082: The refresh token has expired due to inactivity.",
                )
            return self._issue(earlier, "refresh_token", user=True)
        return _sign_in_error(
            400,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        )

    def _check_client(self, form: dict[str, str]) -> Response | None:
        """A client secret must match; a client assertion must be a JWT naming its certificate.

        The assertion's signature is not verified: the simulator knows no public keys.
        """
        assertion = form.get("client_assertion")
        if assertion is None:
            if form.get("client_secret") != self.settings.client_secret:
                return _sign_in_error(
                    401, "invalid_client", "AADSTS7000215: Invalid client secret provided."
                )
            return None
        header, claims = _jwt_parts(assertion)
        if form.get("client_assertion_type") != _JWT_BEARER or header is None or claims is None:
            return _sign_in_error(
                401, "invalid_client", "AADSTS50027: JWT token is invalid or malformed."
            )
        if not any(header.get(key) for key in ("x5t", "x5t#S256", "kid")):
            return _sign_in_error(
                401,
                "invalid_client",
                "AADSTS700027: The client assertion names no certificate (no x5t or kid header).",
            )
        if claims.get("sub") != form.get("client_id") or claims.get("iss") != form.get("client_id"):
            return _sign_in_error(
                401,
                "invalid_client",
                "AADSTS700021: Client assertion application identifier "
                "doesn't match 'client_id' parameter.",
            )
        return None

    async def _device_code(self, request: Request) -> Response:
        """Start a device-code sign-in; the simulated admin approves it at once."""
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        device_code = str(uuid.uuid4())
        user_code = uuid.uuid4().hex[:9].upper()
        grant = _Grant(
            request.path_params["tenant"], form.get("client_id", ""), form.get("scope", "")
        )
        self._device_codes[device_code] = grant
        verification_uri = f"{request.url.scheme}://{request.url.netloc}/devicelogin"
        return JSONResponse(
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": verification_uri,
                "expires_in": 900,
                "interval": 5,
                "message": f"To sign in, use a web browser to open the page {verification_uri} "
                f"and enter the code {user_code} to authenticate.",
            }
        )

    async def _managed_identity(self, request: Request) -> Response:
        """App Service's managed-identity endpoint (IDENTITY_ENDPOINT, X-IDENTITY-HEADER)."""
        if request.headers.get("x-identity-header") != self.settings.client_secret:
            return JSONResponse(
                {"statusCode": 401, "message": "Unauthorized: the identity header is wrong."},
                status_code=401,
            )
        resource = request.query_params.get("resource", "")
        client_id = request.query_params.get("client_id", "system-assigned")
        grant = _Grant(SIMULATED_TENANT, client_id, f"{resource}/.default")
        token, expires_at = self._new_token(grant, "managed_identity")
        return JSONResponse(
            {
                "access_token": token,
                "expires_on": str(int(expires_at)),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id,
            }
        )

    def _new_token(self, grant: _Grant, how: str) -> tuple[str, float]:
        expires_at = self.clock() + self.settings.token_lifetime_seconds
        token = _fake_jwt(grant.tenant, audience=grant.scope.removesuffix("/.default"))
        self._tokens[token] = expires_at
        self.issued.append(
            Issued(token, how, grant.tenant, grant.client_id, grant.scope, expires_at)
        )
        return token, expires_at

    def _issue(self, grant: _Grant, how: str, *, user: bool = False) -> Response:
        token, _ = self._new_token(grant, how)
        lifetime = self.settings.token_lifetime_seconds
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": grant.scope,
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }
        if user:  # a delegated sign-in also gets a refresh token and the user's identity
            refresh_token = f"rt-{uuid.uuid4()}"
            self._refresh_tokens[refresh_token] = grant
            body["refresh_token"] = refresh_token
            body["id_token"] = _fake_id_token(grant)
            body["client_info"] = _b64({"uid": SIMULATED_ADMIN, "utid": grant.tenant})
        return JSONResponse(body)


SIMULATED_ADMIN = "00000000-0000-4000-8000-00000000ad01"
_DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class _Grant:
    tenant: str
    client_id: str
    scope: str


@dataclass(frozen=True)
class Issued:
    """One access token the simulated sign-in handed out; tests read ``GraphSimulator.issued``."""

    token: str
    how: str  # secret, certificate, device_code, refresh_token, managed_identity
    tenant: str
    client_id: str
    scope: str
    expires_at: float


def _sign_in_error(status: int, error: str, description: str) -> Response:
    """An Entra ID token-endpoint error: the description spans lines, as Entra's does."""
    now = datetime.now(UTC)
    trace_id, correlation_id = uuid.uuid4(), uuid.uuid4()
    code = int(description.split(":", 1)[0].removeprefix("AADSTS"))
    return JSONResponse(
        {
            "error": error,
            "error_description": f"{description}\r\nTrace ID: {trace_id}\r\n"
            f"Correlation ID: {correlation_id}\r\nTimestamp: {now:%Y-%m-%d %H:%M:%SZ}",
            "error_codes": [code],
            "timestamp": f"{now:%Y-%m-%d %H:%M:%SZ}",
            "trace_id": str(trace_id),
            "correlation_id": str(correlation_id),
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
        status_code=status,
    )


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _jwt_parts(token: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A JWT's header and claims, read without verifying the signature."""
    parts = token.split(".")
    if len(parts) != 3:
        return None, None
    decoded: list[dict[str, Any] | None] = []
    for part in parts[:2]:
        try:
            value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        except ValueError:  # bad base64, JSON or UTF-8
            value = None
        decoded.append(value if isinstance(value, dict) else None)
    return decoded[0], decoded[1]


def _fake_jwt(tenant: str, audience: str = "https://graph.microsoft.com") -> str:
    claims = {"aud": audience, "tid": tenant, "jti": str(uuid.uuid4()), "iat": int(time.time())}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.sim"


def _fake_id_token(grant: _Grant) -> str:
    now = int(time.time())
    claims = {
        "iss": f"https://login.microsoftonline.com/{grant.tenant}/v2.0",
        "aud": grant.client_id,
        "sub": SIMULATED_ADMIN,
        "oid": SIMULATED_ADMIN,
        "tid": grant.tenant,
        "preferred_username": "incident.admin@contoso.example",
        "name": "Incident Admin",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.sim"
