"""Simulated failures: drawing one, answering it, and dropping a connection mid-answer; and
the 429 for a spent budget."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from typing import TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from batcher.simulator.replies import Context

_CODES = {
    429: ("TooManyRequests", "Too many requests."),
    500: ("generalException", "An internal server error occurred."),
    502: ("BadGateway", "Bad gateway."),
    503: ("serviceNotAvailable", "The service is temporarily unavailable."),
    504: ("GatewayTimeout", "The gateway timed out."),
}


class SimulatedReset(Exception):
    """Raised after the response has started, so the server drops the connection."""


class DropConnection(Response):
    """Promise a body, then drop the connection before sending it.

    The status must allow a body: a 204 (or 304) is complete without one, so the client would
    read the dropped connection as a success.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]}
        )
        raise SimulatedReset


class _HideSimulatedResets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedReset))


logging.getLogger("uvicorn.error").addFilter(_HideSimulatedResets())


Kind = TypeVar("Kind", bound=str)


def throttled(ctx: Context, request: Request, retry_after: str | None = None) -> Response:
    """Graph's 429 for a request over its budget (``retry_after``: the Retry-After, if any)."""
    return ctx.error(request, 429, *_CODES[429], retry_after=retry_after)


def draw(rng: random.Random, mix: Mapping[Kind, float]) -> Kind | None:
    """One fault kind drawn with its probability from ``mix``, or None."""
    value = rng.random()
    for kind, probability in mix.items():
        if value < probability:
            return kind
        value -= probability
    return None


async def answer_fault(ctx: Context, request: Request, kind: str | None) -> Response | None:
    """The answer to an Identity Protection (or outer $batch) fault; None for no fault (``kind``
    None) and for "lost", which applies the request first and then answers ``dropped``."""
    if kind is None or kind == "lost":
        return None
    ctx.record.faults[kind] += 1
    if kind == "reset":
        return DropConnection()
    if kind == "hang":
        await anyio.sleep(ctx.settings.hang_seconds)
        return ctx.error(request, 504, "GatewayTimeout", "The request timed out.")
    return _status_fault(ctx, request, kind, retry_after_429=None)


def dropped(ctx: Context) -> Response:
    """The answer for a "lost" fault once its request is applied: counted, then dropped."""
    ctx.record.faults["lost"] += 1
    return DropConnection()


def directory_fault(ctx: Context, request: Request) -> Response | None:
    """A fault drawn from ``directory_faults`` for one directory request, answered; else None.

    Directory throttling always says when to come back: a 429 carries Retry-After (whole
    seconds: retry_after_seconds rounded up, else 1; where retry_after_least_seconds is under 1,
    fractional seconds, at least that), a 503 carries retry_after_seconds when set.
    """
    mix = ctx.settings.directory_faults
    kind = draw(ctx.random, mix) if mix else None
    if kind is None:
        return None
    ctx.record.directory_faults[kind] += 1
    seconds = ctx.settings.retry_after_seconds or 0.0
    least = ctx.settings.retry_after_least_seconds
    wait = f"{max(seconds, least):g}" if least < 1 else str(max(1, math.ceil(seconds or 1)))
    return _status_fault(ctx, request, kind, retry_after_429=wait)


def _status_fault(
    ctx: Context, request: Request, kind: str, *, retry_after_429: str | None
) -> Response:
    """Graph's error for a fault kind that is a status ("429", "503", ...). A 429 carries
    ``retry_after_429`` as Retry-After (None: no header); a 503 carries retry_after_seconds
    when set."""
    status = int(kind)
    seconds = ctx.settings.retry_after_seconds
    retry_after = None
    if status == 429:
        retry_after = retry_after_429
    elif status == 503 and seconds is not None:
        retry_after = f"{seconds:g}"
    return ctx.error(request, status, *_CODES[status], retry_after=retry_after)
