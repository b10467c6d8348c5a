"""Virtual time for in-process runs: the pacers, back-offs and the simulator's budgets share one
fake clock that jumps to the next sleeper's deadline once nothing else can happen.

The clock never moves while a request is on the wire (Graph sees each request at the time the
pacer let it go), and sleepers wake in deadline order, one deadline at a time: two lanes that
sleep side by side take the longer of their waits, not the sum. Nothing waits for real, so a
loaded host changes nothing a test measures on this clock. Every sleep is recorded.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import httpx

START = 1000.0
# Loop turns with nothing new on the wire and no new sleeper before the clock moves: each
# turn lets every runnable task take one step (an answer on its way to the ledger, a worker
# on its way to the pacer), so the tasks reach their next sleep before time jumps.
SETTLE_TURNS = 50


class VirtualTime:
    """``clock`` and ``sleep`` for the pacers and back-offs, ``budget_clock`` for the simulator,
    ``transport`` around its in-process transport; ``running`` drives the clock."""

    def __init__(self, start: float = START) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.busy = 0  # requests on the wire
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = 0
        self._generation = 0  # bumped by every new sleeper, request and answer
        self._changed: anyio.Event | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock reaches now + ``seconds`` (recorded)."""
        self.sleeps.append(seconds)
        woken = anyio.Event()
        self._order += 1
        entry = (self.now + max(0.0, seconds), self._order, woken)
        heapq.heappush(self._sleepers, entry)
        self._poke()
        try:
            await woken.wait()
        finally:
            if not woken.is_set():  # cancelled (a stop): it no longer holds the clock back
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)
                self._poke()

    def transport(self, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        """``inner``, counting each request on the wire until its body is read."""
        return _Counted(inner, self)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[VirtualTime]:
        """Drive the clock while the block runs."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._drive)
            try:
                yield self
            finally:
                tasks.cancel_scope.cancel()

    def _poke(self) -> None:
        self._generation += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _drive(self) -> None:
        while True:
            if self.busy or not self._sleepers:
                self._changed = self._changed or anyio.Event()
                await self._changed.wait()
                continue
            seen = self._generation
            for _ in range(SETTLE_TURNS):
                await anyio.lowlevel.checkpoint()
            if seen != self._generation or self.busy or not self._sleepers:
                continue  # something happened meanwhile: let it settle first
            deadline, _, woken = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            woken.set()


class _Counted(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, time: VirtualTime) -> None:
        self._inner = inner
        self._time = time

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._time.busy += 1
        self._time._poke()
        try:
            response = await self._inner.handle_async_request(request)
            body = await response.aread()
        finally:
            self._time.busy -= 1
            self._time._poke()
        return httpx.Response(response.status_code, headers=response.headers, content=body)
