"""The only place Graph's answers (and missing answers) become the project's errors."""

from __future__ import annotations

import email.utils
import json
import math
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any

import httpx

from batcher.errors import (
    BadRequest,
    Forbidden,
    GraphError,
    NoAnswer,
    NotConnected,
    NotFound,
    Rejected,
    ServerError,
    Throttled,
    Unauthorized,
)
from batcher.outcomes import Answer, Outcome

_OUTCOMES: dict[type[GraphError], Outcome] = {
    Throttled: Outcome.THROTTLED,
    ServerError: Outcome.SERVER_ERROR,
    NoAnswer: Outcome.NO_ANSWER,
    NotConnected: Outcome.NOT_CONNECTED,
    BadRequest: Outcome.BAD_REQUEST,
    Unauthorized: Outcome.UNAUTHORIZED,
    Forbidden: Outcome.FORBIDDEN,
    NotFound: Outcome.NOT_FOUND,
}


def error_for(
    status: int, body: Any, headers: Mapping[str, str], client_request_id: str
) -> GraphError:
    """The error for a non-2xx answer: its class from the status, Graph's code, message and
    request-id from the body ``{"error": {"code", "message", "innerError": {"request-id"}}}``."""
    code, message, inner_request_id = _graph_error_body(body)
    lowered = {k.lower(): v for k, v in headers.items()}
    reason = code or httpx.codes.get_reason_phrase(status) or "error"
    return _error_class(status)(
        f"HTTP {status} {reason}: {message or 'no message'}",
        status=status,
        code=code,
        request_id=lowered.get("request-id") or inner_request_id,
        client_request_id=client_request_id,
        retry_after=parse_retry_after(lowered.get("retry-after")),
    )


def response_error(response: httpx.Response, client_request_id: str) -> GraphError:
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = response.text[:200] or None
    return error_for(response.status_code, body, response.headers, client_request_id)


def answer_of(exc: GraphError | None, status: int = 200, request_id: str | None = None) -> Answer:
    """How the ledger records an attempt's answer (``exc`` None: Graph accepted it)."""
    if exc is None:
        return Answer(Outcome.ACCEPTED, http_status=status, request_id=request_id)
    return Answer(
        _OUTCOMES.get(type(exc), Outcome.REJECTED),
        http_status=exc.status,
        error_code=exc.code,
        error_message=exc.message,
        request_id=exc.request_id,
    )


def _error_class(status: int) -> type[GraphError]:
    if status == 429:
        return Throttled
    if status >= 500:
        return ServerError
    return {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound}.get(status, Rejected)


def _graph_error_body(body: Any) -> tuple[str | None, str | None, str | None]:
    if isinstance(body, str):
        return None, body, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    inner = error.get("innerError") or error.get("innererror") or {}
    request_id = inner.get("request-id") if isinstance(inner, dict) else None
    code, message = error.get("code"), error.get("message")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
        request_id if isinstance(request_id, str) else None,
    )


def no_answer(exc: httpx.TransportError, url: str, client_request_id: str) -> NoAnswer:
    """A request that got no HTTP answer, with what happened in a few words."""
    host = httpx.URL(url).host
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain).lower()
    connect = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    if isinstance(exc, httpx.ProxyError):  # the proxy refused (407) or failed the tunnel
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        cause, connect = f"the proxy refused or failed the connection ({detail})", True
    elif any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or (
        "certificate_verify_failed" in text
    ):
        cause = "its TLS certificate is not trusted"
    elif (
        any(isinstance(e, socket.gaierror) for e in chain)  # EAI_AGAIN too: no DNS server
        or "name or service not known" in text
        or "nodename nor servname" in text
        or ("getaddrinfo failed" in text or "no address associated" in text)
    ):
        cause = "the name does not resolve (DNS)"
    elif any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        cause = "the connection was refused"
    elif isinstance(exc, httpx.TimeoutException):
        cause = "no connection in time" if connect else "no answer in time"
    elif connect:
        cause = f"no connection ({type(exc).__name__})"
    else:
        cause = f"the connection broke before the answer ({type(exc).__name__})"
    kind = NotConnected if connect else NoAnswer
    return kind(
        f"no answer from {host}: {cause}",
        cause=cause,
        host=host,
        client_request_id=client_request_id,
    )


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    item: BaseException | None = exc
    while item is not None and len(seen) < 10 and all(item is not s for s in seen):
        seen.append(item)
        item = item.__cause__ or item.__context__
    return seen


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: seconds, fractional seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # an HTTP date is always GMT, never local time
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None  # NaN, inf guard
