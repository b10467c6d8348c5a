"""The simulated tenant: one Starlette app wiring Graph's endpoints, sign-in and the record."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from batcher.config import SimulatorSettings
from batcher.simulator.budget import TokenBucket
from batcher.simulator.record import Record
from batcher.simulator.replies import Context
from batcher.simulator.risky import RiskyUsers
from batcher.simulator.signin import Issued, SimulatedSignIn


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
        self.sign_in = SimulatedSignIn(settings, tokens=tokens, clock=clock)
        self.ctx = Context(settings, self.record, random.Random(settings.seed), self.sign_in)
        self.bucket = TokenBucket(
            settings.rate_per_second,
            settings.burst,
            settings.other_apps_share,
            random.Random(None if settings.seed is None else settings.seed + 1),
        )
        self.risky_users = RiskyUsers(self.ctx, self.bucket)
        self.app = Starlette(
            routes=[
                *self.risky_users.routes(),
                *self.sign_in.routes(),
                Route("/_simulator/record", self._record, methods=["GET"]),
            ]
        )

    @property
    def issued(self) -> list[Issued]:
        """Every token the simulated sign-in handed out."""
        return self.sign_in.issued

    async def _record(self, request: Request) -> Response:
        return JSONResponse(self.record.to_json())
