"""The simulated tenant: one Starlette app wiring Graph's endpoints, sign-in and the record."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from batcher.config import SimulatorSettings
from batcher.simulator.authmethods import AuthMethods
from batcher.simulator.batch import Batch
from batcher.simulator.budget import TokenBucket
from batcher.simulator.comments import INCIDENTS, IncidentComments
from batcher.simulator.directory import Directory, DirectoryUser, load_directory
from batcher.simulator.mailrules import MailRules
from batcher.simulator.record import Record
from batcher.simulator.replies import Context
from batcher.simulator.risky import RiskyUsers
from batcher.simulator.roles import RoleEndpoints
from batcher.simulator.security import Security
from batcher.simulator.signin import Issued, SimulatedSignIn
from batcher.simulator.transport import InProcessTransport
from batcher.simulator.users import DirectoryEndpoints


class GraphSimulator:
    """The Starlette app and its state. One instance is one simulated tenant.

    ``users``: a closed directory of exactly these users (``directory_file`` otherwise; an
    open directory when neither is given). ``clock`` dates tokens and revoked sessions;
    ``budget_clock`` (monotonic seconds) drives every budget's window and times the record.
    """

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        tokens: set[str] | None = None,
        clock: Callable[[], float] = time.time,
        users: Iterable[DirectoryUser] | None = None,
        budget_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.record = Record(clock=budget_clock)
        self.sign_in = SimulatedSignIn(settings, tokens=tokens, clock=clock)
        self.ctx = Context(settings, self.record, random.Random(settings.seed), self.sign_in)
        self.bucket = TokenBucket(
            settings.rate_per_second,
            settings.burst,
            settings.other_apps_share,
            random.Random(None if settings.seed is None else settings.seed + 1),
            clock=budget_clock,
        )
        if users is None and settings.directory_file is not None:
            users = load_directory(settings.directory_file)
        self.directory = Directory(users)
        self.risky_users = RiskyUsers(self.ctx, self.bucket)
        self.reports = TokenBucket(
            settings.reports_per_second, settings.reports_burst, clock=budget_clock
        )
        self.incidents = IncidentComments(
            self.ctx, (*INCIDENTS, *(str(n) for n in settings.incidents))
        )
        self.security = Security(self.ctx, self.reports, self.incidents.comments)
        self.users = DirectoryEndpoints(self.ctx, self.directory, clock, budget_clock)
        self.roles = RoleEndpoints(self.ctx, self.directory, self.users)
        self.auth_methods = AuthMethods(self.ctx, self.reports)
        self.mail_rules = MailRules(self.ctx)
        self.batch = Batch(self.ctx, self._serve)
        self.app = Starlette(
            routes=[
                *self.risky_users.routes(),
                *self.auth_methods.routes(),
                *self.mail_rules.routes(),
                *self.users.routes(),
                *self.roles.routes(),
                *self.batch.routes(),
                *self.incidents.routes(),
                *self.security.routes(),
                *self.sign_in.routes(),
                Route("/_simulator/record", self._record, methods=["GET"]),
                # Anything else under a Graph version: Graph's JSON 404, also inside a $batch.
                Route("/v1.0/{rest:path}", self._not_found),
                Route("/beta/{rest:path}", self._not_found),
            ]
        )

    @property
    def issued(self) -> list[Issued]:
        """Every token the simulated sign-in handed out."""
        return self.sign_in.issued

    def transport(self, timeout: float | None = None) -> httpx.AsyncBaseTransport:
        """An httpx transport that serves requests in-process, failing as a socket would: a
        simulated reset or lost answer raises httpx.ReadError, an answer slower than
        ``timeout`` (default: the request's read timeout) raises httpx.ReadTimeout."""
        return InProcessTransport(self.app, timeout)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def _record(self, request: Request) -> Response:
        return JSONResponse(self.record.to_json())

    async def _not_found(self, request: Request) -> Response:
        return self.ctx.not_found(request)
