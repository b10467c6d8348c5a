"""A local stand-in for Graph's riskyUsers actions and sign-in, for tests and safe rehearsals."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from batcher.config import SimulatorSettings
from batcher.simulator_signin import SIMULATED_TENANT, Issued, SimulatedSignIn

__all__ = ["MAX_IDS_PER_CALL", "SIMULATED_TENANT", "GraphSimulator", "Record", "RunningSimulator"]

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
    answers: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, status)
    applied_at: dict[str, float] = field(default_factory=dict)
    reads: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def apply(self, action: str, ids: list[str], state: str) -> None:
        with self.changed:
            for uid in ids:
                self.accepted[action].append(uid.lower())
                self.risk_state[uid.lower()] = state
                self.applied_at[uid.lower()] = time.monotonic()
            self.changed.notify_all()

    def wait_for_accepted(self, action: str, count: int, timeout: float) -> bool:
        """Block until ``count`` IDs were accepted for ``action`` (True) or time runs out."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.accepted[action]) >= count, timeout)

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
    """The tenant's shared budget: ``rate`` requests a second, at most ``burst`` at once.

    With ``other_share`` > 0, another app in the tenant wants that share of the budget: its
    requests come at random (Poisson) times, and one that finds the bucket empty takes the next
    token the moment it refills, before ours, as an app retrying at once would.
    """

    def __init__(
        self, rate: float, burst: int, other_share: float = 0.0, rng: random.Random | None = None
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._rng = rng or random.Random()
        self._other_rate = other_share * rate
        self._other_next = (
            self._last + self._rng.expovariate(self._other_rate) if self._other_rate else math.inf
        )
        self._other_waiting = 0
        self.other_served = 0

    def _refill(self, to: float) -> None:
        self._tokens = min(self.burst, self._tokens + (to - self._last) * self.rate)
        self._last = to

    def _run_other_app(self, until: float) -> None:
        while True:
            full = self._last + max(0.0, (1 - self._tokens) / self.rate)
            ready = full if self._other_waiting else math.inf
            step = min(self._other_next, ready)
            if step > until:
                return
            self._refill(step)
            if step == self._other_next:
                self._other_waiting += 1
                self._other_next += self._rng.expovariate(self._other_rate)
            if self._other_waiting and self._tokens >= 1 - 1e-9:
                self._tokens -= 1
                self._other_waiting -= 1
                self.other_served += 1

    def take(self) -> bool:
        now = time.monotonic()
        self._run_other_app(now)
        self._refill(now)
        if self._tokens >= 1 - 1e-9:
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

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        tokens: set[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.record = Record()
        self._random = random.Random(settings.seed)
        self.bucket = TokenBucket(
            settings.rate_per_second,
            settings.burst,
            settings.other_apps_share,
            random.Random(None if settings.seed is None else settings.seed + 1),
        )
        self.sign_in = SimulatedSignIn(settings, tokens=tokens, clock=clock)
        self._bad_ids = {i.lower() for i in settings.bad_ids}
        self.app = Starlette(
            routes=[
                Route(
                    "/{version}/identityProtection/riskyUsers/{action}",
                    self._action,
                    methods=["POST"],
                ),
                Route("/beta/riskyUsers/{action}", self._action, methods=["POST"]),
                Route(
                    "/{version}/identityProtection/riskyUsers",
                    self._list_risky_users,
                    methods=["GET"],
                ),
                Route(
                    "/{version}/identityProtection/riskyUsers/{user_id}",
                    self._get_risky_user,
                    methods=["GET"],
                ),
                *self.sign_in.routes(),
                Route("/_simulator/record", self._record, methods=["GET"]),
            ]
        )

    @property
    def issued(self) -> list[Issued]:
        """Every token the simulated sign-in handed out."""
        return self.sign_in.issued

    # -- Graph ---------------------------------------------------------------------------------
    async def _action(self, request: Request) -> Response:
        headers = _headers(request)
        version = request.path_params.get("version", "beta")
        action = request.path_params["action"]
        if version not in ("v1.0", "beta") or action not in _ACTIONS:
            return self._error(404, "Request_ResourceNotFound", "Resource not found.", headers)
        refused = self.sign_in.check_bearer(request.headers.get("authorization", ""))
        if refused is not None:
            return self._error(401, "InvalidAuthenticationToken", refused, headers)
        if self.settings.permission_denied:
            return self._error(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
                headers,
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
        self._answered(204)
        return Response(status_code=204, headers=headers)

    def _apply(self, action: str, ids: list[str]) -> None:
        self.record.apply(action, ids, _ACTIONS[action])

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

    def _answered(self, status: int) -> None:
        self.record.statuses[status] += 1
        self.record.answers.append((time.monotonic(), status))

    def _error(self, status: int, code: str, message: str, headers: dict[str, str]) -> Response:
        self._answered(status)
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

    # -- reads: what verify asks -----------------------------------------------------------------
    def _risky_user(self, user_id: str) -> dict[str, Any] | None:
        """The user as Identity Protection shows it: feedback applies after processing_seconds."""
        state = self.record.risk_state.get(user_id)
        if state is None:
            return None
        waited = time.monotonic() - self.record.applied_at.get(user_id, 0.0)
        processing = waited < self.settings.processing_seconds
        shown = "atRisk" if processing else state
        return {
            "id": user_id,
            "isDeleted": False,
            "isProcessing": processing,
            "riskLevel": "high" if shown == "confirmedCompromised" else "none",
            "riskState": shown,
            "riskDetail": {
                "confirmedCompromised": "adminConfirmedUserCompromised",
                "dismissed": "adminDismissedAllRiskForUser",
            }.get(shown, "none"),
            "riskLastUpdatedDateTime": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    async def _read_gate(self, request: Request) -> Response | None:
        """Reads pass the same checks, and spend the same budget, as actions."""
        headers = _headers(request)
        if request.path_params.get("version") not in ("v1.0", "beta"):
            return self._error(404, "Request_ResourceNotFound", "Resource not found.", headers)
        refused = self.sign_in.check_bearer(request.headers.get("authorization", ""))
        if refused is not None:
            return self._error(401, "InvalidAuthenticationToken", refused, headers)
        if not self.bucket.take():
            return self._error(429, "TooManyRequests", "Too many requests.", headers)
        self.record.reads += 1
        return None

    async def _list_risky_users(self, request: Request) -> Response:
        refused = await self._read_gate(request)
        if refused is not None:
            return refused
        wanted = re.fullmatch(
            r"\s*riskState\s+eq\s+'(\w+)'\s*", request.query_params.get("$filter", "")
        )
        top = min(500, max(1, int(request.query_params.get("$top", "20") or 20)))
        skip = int(request.query_params.get("$skiptoken", "0") or 0)
        users = [u for uid in sorted(self.record.risk_state) if (u := self._risky_user(uid))]
        if wanted:
            users = [u for u in users if u["riskState"] == wanted.group(1)]
        page = users[skip : skip + top]
        body: dict[str, Any] = {"value": page}
        if skip + top < len(users):
            query = {k: v for k, v in request.query_params.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(skip + top)
            body["@odata.nextLink"] = str(request.url.replace(query=urlencode(query)))
        self._answered(200)
        return JSONResponse(body, headers=_headers(request))

    async def _get_risky_user(self, request: Request) -> Response:
        refused = await self._read_gate(request)
        if refused is not None:
            return refused
        user = self._risky_user(request.path_params["user_id"].lower())
        if user is None:
            return self._error(404, "ResourceNotFound", "Resource not found.", _headers(request))
        self._answered(200)
        return JSONResponse(user, headers=_headers(request))

    async def _record(self, request: Request) -> Response:
        return JSONResponse(self.record.to_json())


def _headers(request: Request) -> dict[str, str]:
    headers = {"request-id": str(uuid.uuid4())}
    client_request_id = request.headers.get("client-request-id")
    if client_request_id:
        headers["client-request-id"] = client_request_id
    return headers


class RunningSimulator:
    """Serve a simulator on a loopback port from a background thread, as a context manager.

    The socket is bound and listening before the thread starts, so clients can connect at
    once: the kernel queues their connections until the server accepts them.
    """

    def __init__(
        self,
        simulator: GraphSimulator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_certfile: str | os.PathLike[str] | None = None,
        ssl_keyfile: str | os.PathLike[str] | None = None,
    ) -> None:
        """Serve plain HTTP, or HTTPS with a PEM certificate (chain) and key, e.g. from trustme."""
        self.simulator = simulator
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(128)
        self.port = self._socket.getsockname()[1]
        self.url = f"{'https' if ssl_certfile else 'http'}://{host}:{self.port}"
        config = uvicorn.Config(
            simulator.app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            ssl_certfile=None if ssl_certfile is None else os.fspath(ssl_certfile),
            ssl_keyfile=None if ssl_keyfile is None else os.fspath(ssl_keyfile),
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
