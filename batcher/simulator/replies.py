"""What every simulated Graph endpoint shares: the tenant's state, the checks, the replies."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from batcher.config import SimulatorSettings
from batcher.simulator.record import Record
from batcher.simulator.signin import SimulatedSignIn

VERSIONS = ("v1.0", "beta")
INNER = "batcher.simulator.inner"  # ASGI scope key: this request came inside a $batch
DENIED = "Insufficient privileges to complete the operation."


@dataclass
class Context:
    """One simulated tenant's shared state, handed to each group of endpoints."""

    settings: SimulatorSettings
    record: Record
    random: random.Random
    sign_in: SimulatedSignIn

    def check(self, request: Request) -> Response | None:
        """404 for an unknown API version, 401 for a missing or bad bearer token, else None."""
        if request.path_params.get("version", "beta") not in VERSIONS:
            return self.not_found(request)
        refused = self.sign_in.check_bearer(request.headers.get("authorization", ""))
        if refused is not None:
            return self.error(request, 401, "InvalidAuthenticationToken", refused)
        return None

    def not_found(self, request: Request) -> Response:
        """Graph's 404 for a path it does not serve."""
        return self.error(request, 404, "Request_ResourceNotFound", "Resource not found.")

    def answered(self, request: Request, status: int) -> None:
        """Count an answer to a client; $batch counts its inner answers itself."""
        if not is_inner(request):
            self.record.statuses[status] += 1
            self.record.answers.append((self.record.clock(), status))

    def error(
        self,
        request: Request,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: str | None = None,
    ) -> Response:
        headers = reply_headers(request)
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        self.answered(request, status)
        return JSONResponse(error_body(code, message, headers), status_code=status, headers=headers)

    def json(self, request: Request, body: Any, status: int = 200) -> Response:
        self.answered(request, status)
        return JSONResponse(body, status_code=status, headers=reply_headers(request))

    def empty(self, request: Request, status: int = 204) -> Response:
        self.answered(request, status)
        return Response(status_code=status, headers=reply_headers(request))


def is_inner(request: Request) -> bool:
    return bool(request.scope.get(INNER))


def reply_headers(request: Request) -> dict[str, str]:
    """A fresh request-id, and the client's client-request-id echoed."""
    headers = {"request-id": str(uuid.uuid4())}
    client_request_id = request.headers.get("client-request-id")
    if client_request_id:
        headers["client-request-id"] = client_request_id
    return headers


def error_body(code: str, message: str, headers: dict[str, str]) -> dict[str, Any]:
    """Graph's error shape, repeating the reply's request-id inside."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": headers["request-id"],
                "client-request-id": headers.get("client-request-id", ""),
            },
        }
    }


def odata_context(request: Request, what: str) -> str:
    """The @odata.context URL Graph puts on an answer, e.g. .../v1.0/$metadata#users."""
    return f"{str(request.base_url).rstrip('/')}/{request.path_params['version']}/$metadata#{what}"
