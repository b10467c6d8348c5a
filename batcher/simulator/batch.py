"""JSON batching: POST /{version}/$batch runs up to 20 requests through the same endpoints."""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from batcher.simulator.faults import answer_fault, draw, dropped
from batcher.simulator.replies import INNER, Context, error_body, is_inner

MAX_REQUESTS_PER_BATCH = 20
_PAYLOAD = "Invalid batch payload format."
# Header names as Graph writes them in inner answers; any other is shown as received.
_HEADER_NAMES = {
    "retry-after": "Retry-After",
    "content-type": "Content-Type",
    "location": "Location",
}


class Batch:
    """The $batch endpoint. Each inner request goes through ``app`` (the simulator itself),
    marked as inner: it is checked, throttled and faulted on its own, and its answer lands in
    ``inner_statuses``. Each batch takes the simulator's latency. The outer call draws
    ``faults`` like an Identity Protection call (a lost batch applies every inner request,
    then drops the connection). Answers come back in the order of the simulator's seeded
    random, as Graph's come in any order."""

    def __init__(self, ctx: Context, app: ASGIApp) -> None:
        self.ctx = ctx

        async def inner(scope: Scope, receive: Receive, send: Send) -> None:
            await app({**scope, INNER: True}, receive, send)

        self._transport = httpx.ASGITransport(app=inner, raise_app_exceptions=False)

    def routes(self) -> list[Route]:
        return [Route("/{version}/$batch", self._batch, methods=["POST"])]

    async def _batch(self, request: Request) -> Response:
        ctx = self.ctx
        refused = ctx.check(request)
        if refused is not None:
            return refused
        if is_inner(request):
            return ctx.error(request, 400, "BadRequest", "A $batch cannot hold a $batch.")
        ctx.record.batches += 1
        fault = draw(ctx.random, ctx.settings.faults)
        response = await answer_fault(ctx, request, fault)
        if response is not None:
            return response
        try:
            items = _items(json.loads(await request.body()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return ctx.error(request, 400, "BadRequest", _PAYLOAD)
        except ValueError as exc:
            return ctx.error(request, 400, "BadRequest", str(exc))
        # Graph's latency, as for Identity Protection calls (latency_min/max_seconds)
        await anyio.sleep(
            ctx.random.uniform(ctx.settings.latency_min_seconds, ctx.settings.latency_max_seconds)
        )
        responses = [await self._one(request, item) for item in items]
        ctx.random.shuffle(responses)
        if fault == "lost":
            return dropped(ctx)
        return ctx.json(request, {"responses": responses})

    async def _one(self, outer: Request, item: dict[str, Any]) -> dict[str, Any]:
        record = self.ctx.record
        record.inner_requests += 1
        headers = {str(k).lower(): str(v) for k, v in item.get("headers", {}).items()}
        if "body" in item and "content-type" not in headers:
            status, shown, body = _refused(
                f"Write request id : {item['id']} does not contain Content-Type header or body.",
                headers,
            )
        elif "://" in item["url"]:
            status, shown, body = _refused("The request URL must be relative.", headers)
        else:
            status, shown, body = await self._send(outer, item, headers)
        record.inner_statuses[status] += 1
        return {"id": item["id"], "status": status, "headers": shown, "body": body}

    async def _send(
        self, outer: Request, item: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        """Run one inner request through the simulator, with the batch's bearer token."""
        headers.pop("authorization", None)
        if "authorization" in outer.headers:
            headers["authorization"] = outer.headers["authorization"]
        content = None
        if "body" in item:
            body = item["body"]
            content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        base = f"{str(outer.base_url).rstrip('/')}/{outer.path_params['version']}"
        url = item["url"] if item["url"].startswith("/") else f"/{item['url']}"
        request = httpx.Request(item["method"], base + url, headers=headers, content=content)
        response = await self._transport.handle_async_request(request)
        raw = await response.aread()
        shown = {
            _HEADER_NAMES.get(name, name): value
            for name, value in response.headers.items()
            if name != "content-length"
        }
        try:
            answer = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            answer = raw.decode("utf-8", "replace")
        return response.status_code, shown, answer


def _items(payload: Any) -> list[dict[str, Any]]:
    """The inner requests of a batch payload; ValueError (a 400 for the whole batch) if the
    payload is malformed or holds more than 20."""
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list) or not requests:
        raise ValueError(_PAYLOAD)
    if len(requests) > MAX_REQUESTS_PER_BATCH:
        raise ValueError(
            f"The batch holds {len(requests)} requests; at most {MAX_REQUESTS_PER_BATCH} are "
            "allowed."
        )
    seen: set[str] = set()
    for item in requests:
        if not (
            isinstance(item, dict)
            and all(isinstance(item.get(key), str) and item[key] for key in ("id", "method", "url"))
            and isinstance(item.get("headers", {}), dict)
        ):
            raise ValueError(_PAYLOAD + " Each request needs an id, a method and a url.")
        if item["id"] in seen:
            raise ValueError(f"The batch holds the request id {item['id']!r} twice.")
        seen.add(item["id"])
    return requests


def _refused(message: str, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    """An inner 400 that never reaches an endpoint."""
    shown = {"request-id": str(uuid.uuid4())}
    if "client-request-id" in headers:
        shown["client-request-id"] = headers["client-request-id"]
    body = error_body("BadRequest", message, shown)
    return 400, {**shown, "Content-Type": "application/json"}, body
