"""Drive the simulator in-process through httpx, failing as a real socket would."""

from __future__ import annotations

import anyio
import httpx
from starlette.types import ASGIApp

from batcher.simulator.faults import SimulatedReset


class InProcessTransport(httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` over the simulator's app, with a socket's failures.

    A simulated ``reset`` or ``lost`` (answer dropped after applying the request) raises
    ``httpx.ReadError``; an answer slower than ``timeout`` seconds (a ``hang``) raises
    ``httpx.ReadTimeout``. Without ``timeout`` the request's own read timeout applies (the
    client's ``timeout=``), as it would on a socket; None there too waits for ever.
    """

    def __init__(self, app: ASGIApp, timeout: float | None = None) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._timeout = timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        limit = self._timeout
        if limit is None:
            limit = request.extensions.get("timeout", {}).get("read")
        try:
            with anyio.fail_after(limit):
                return await self._asgi.handle_async_request(request)
        except TimeoutError:
            raise httpx.ReadTimeout(
                f"the simulator did not answer within {limit} s", request=request
            ) from None
        except SimulatedReset:
            raise httpx.ReadError("the simulator dropped the connection", request=request) from None
