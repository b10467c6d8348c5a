"""A local stand-in for Graph's riskyUsers actions and sign-in, for tests and safe rehearsals."""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from batcher.auth import SIMULATOR_TOKEN
from batcher.config import SimulatorSettings

SIMULATED_TENANT = "00000000-0000-4000-8000-000000000001"
MAX_IDS_PER_CALL = 60
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ACTIONS = {"confirmCompromised": "confirmedCompromised", "dismiss": "dismissed"}


@dataclass
class Record:
    """What the simulator saw and did; tests read it after a run."""

    accepted: dict[str, list[str]] = field(default_factory=lambda: {a: [] for a in _ACTIONS})
    risk_state: dict[str, str] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + self.faults["reset"] + self.faults["lost"]

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "risk_state": self.risk_state,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "faults": dict(self.faults),
            "requests": self.requests,
        }


class TokenBucket:
    """The tenant's shared budget: ``rate`` requests a second, at most ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class _SimulatedReset(Exception):
    """Raised after the response has started, so the server drops the connection."""


class _DropConnection(Response):
    """Promise a body, then drop the connection before sending it.

    The status must allow a body: a 204 (or 304) is complete without one, so the client would
    read the dropped connection as a success.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]}
        )
        raise _SimulatedReset


class _HideSimulatedResets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _SimulatedReset))


logging.getLogger("uvicorn.error").addFilter(_HideSimulatedResets())


class GraphSimulator:
    """The Starlette app and its state. One instance is one simulated tenant."""

    def __init__(self, settings: SimulatorSettings, *, tokens: set[str] | None = None) -> None:
        self.settings = settings
        self.record = Record()
        self.bucket = TokenBucket(settings.rate_per_second, settings.burst)
        self._tokens = set(tokens or {SIMULATOR_TOKEN})
        self._random = random.Random(settings.seed)
        self._bad_ids = {i.lower() for i in settings.bad_ids}
        self.app = Starlette(
            routes=[
                Route(
                    "/{version}/identityProtection/riskyUsers/{action}",
                    self._action,
                    methods=["POST"],
                ),
                Route("/beta/riskyUsers/{action}", self._action, methods=["POST"]),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route("/_simulator/record", self._record, methods=["GET"]),
            ]
        )

    # -- Graph ---------------------------------------------------------------------------------
    async def _action(self, request: Request) -> Response:
        headers = _headers(request)
        version = request.path_params.get("version", "beta")
        action = request.path_params["action"]
        if version not in ("v1.0", "beta") or action not in _ACTIONS:
            return self._error(404, "Request_ResourceNotFound", "Resource not found.", headers)
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self._tokens:
            return self._error(
                401, "InvalidAuthenticationToken", "Access token is empty or invalid.", headers
            )
        if not self.bucket.take():
            return self._error(429, "TooManyRequests", "Too many requests.", headers)
        fault = self._draw_fault()
        if fault is not None:
            response = await self._fault(fault, headers)
            if response is not None:
                return response
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(400, "BadRequest", "Unable to read JSON request payload.", headers)
        ids = body.get("userIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            return self._error(400, "invalidRequest", "userIds is required.", headers)
        if len(ids) > MAX_IDS_PER_CALL:
            return self._error(
                400,
                "invalidRequest",
                f"The number of userIds exceeds the limit of {MAX_IDS_PER_CALL}.",
                headers,
            )
        for uid in ids:
            if not isinstance(uid, str) or not _GUID.match(uid) or uid.lower() in self._bad_ids:
                return self._error(
                    400, "invalidRequest", "One or more user IDs are invalid.", headers
                )
        await anyio.sleep(
            self._random.uniform(
                self.settings.latency_min_seconds, self.settings.latency_max_seconds
            )
        )
        self._apply(action, ids)
        if fault == "lost":
            self.record.faults["lost"] += 1
            return _DropConnection()
        self.record.statuses[204] += 1
        return Response(status_code=204, headers=headers)

    def _apply(self, action: str, ids: list[str]) -> None:
        for uid in ids:
            self.record.accepted[action].append(uid.lower())
            self.record.risk_state[uid.lower()] = _ACTIONS[action]

    def _draw_fault(self) -> str | None:
        draw = self._random.random()
        for kind, probability in self.settings.faults.items():
            if draw < probability:
                return kind
            draw -= probability
        return None

    async def _fault(self, kind: str, headers: dict[str, str]) -> Response | None:
        if kind == "lost":
            return None  # applied first, then the connection drops
        self.record.faults[kind] += 1
        if kind == "reset":
            return _DropConnection()
        if kind == "hang":
            await anyio.sleep(self.settings.hang_seconds)
            return self._error(504, "GatewayTimeout", "The request timed out.", headers)
        status = int(kind)
        if status == 503 and self.settings.retry_after_seconds is not None:
            headers = {**headers, "Retry-After": f"{self.settings.retry_after_seconds:g}"}
        codes = {
            429: ("TooManyRequests", "Too many requests."),
            500: ("generalException", "An internal server error occurred."),
            502: ("BadGateway", "Bad gateway."),
            503: ("serviceNotAvailable", "The service is temporarily unavailable."),
            504: ("GatewayTimeout", "The gateway timed out."),
        }
        code, message = codes[status]
        return self._error(status, code, message, headers)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str]) -> Response:
        self.record.statuses[status] += 1
        body = {
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
        return JSONResponse(body, status_code=status, headers=headers)

    # -- sign-in -------------------------------------------------------------------------------
    async def _token(self, request: Request) -> Response:
        # Parsed by hand: Starlette's request.form() needs python-multipart, not a dependency.
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "AADSTS70003"},
                status_code=400,
            )
        if form.get("client_secret") != self.settings.client_secret:
            return JSONResponse(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
                status_code=401,
            )
        token = _fake_jwt(request.path_params["tenant"])
        self._tokens.add(token)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.settings.token_lifetime_seconds,
                "ext_expires_in": self.settings.token_lifetime_seconds,
                "access_token": token,
            }
        )

    async def _record(self, request: Request) -> Response:
        return JSONResponse(self.record.to_json())


def _headers(request: Request) -> dict[str, str]:
    headers = {"request-id": str(uuid.uuid4())}
    client_request_id = request.headers.get("client-request-id")
    if client_request_id:
        headers["client-request-id"] = client_request_id
    return headers


def _fake_jwt(tenant: str) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"tid": tenant, "jti": str(uuid.uuid4()), "iat": int(time.time())}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sim"


class RunningSimulator:
    """Serve a simulator on a loopback port from a background thread, as a context manager.

    The socket is bound and listening before the thread starts, so clients can connect at
    once: the kernel queues their connections until the server accepts them.
    """

    def __init__(self, simulator: GraphSimulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(128)
        self.port = self._socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            simulator.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def serve_forever(self) -> None:
        """Serve in the calling thread until Ctrl-C."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def __enter__(self) -> RunningSimulator:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
