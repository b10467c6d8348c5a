"""GraphClient against the real simulator over HTTP: every answer becomes the right result."""

from __future__ import annotations

import email.utils
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from batcher.auth import StaticToken, TokenSource
from batcher.config import SimulatorSettings
from batcher.errors import (
    BadRequest,
    NoAnswer,
    Rejected,
    ServerError,
    Throttled,
    Unauthorized,
)
from batcher.graph import Accepted, GraphClient, parse_retry_after
from batcher.simulator import RunningSimulator
from tests.conftest import FAST, TEST_TOKEN

ACTION = "confirmCompromised"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def new_ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def settings(**changes: Any) -> SimulatorSettings:
    return FAST.model_copy(update=changes)


class Exchanges:
    """httpx event hooks that keep every request and response the client really exchanged."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response] = []

    async def on_request(self, request: httpx.Request) -> None:
        self.requests.append(request)

    async def on_response(self, response: httpx.Response) -> None:
        self.responses.append(response)


@asynccontextmanager
async def graph_client(
    server: RunningSimulator,
    *,
    tokens: TokenSource | None = None,
    api_version: str = "v1.0",
    base_url: str | None = None,
    timeout: float = 10.0,
    exchanges: Exchanges | None = None,
) -> AsyncIterator[GraphClient]:
    hooks: dict[str, list[Any]] = {}
    if exchanges is not None:
        hooks = {"request": [exchanges.on_request], "response": [exchanges.on_response]}
    async with httpx.AsyncClient(timeout=timeout, event_hooks=hooks) as http:
        yield GraphClient(
            http,
            base_url if base_url is not None else server.url,
            api_version,
            tokens if tokens is not None else StaticToken(TEST_TOKEN),
        )


def applied(server: RunningSimulator) -> list[str]:
    return server.simulator.record.accepted[ACTION]


# -- success -----------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_204_is_accepted_with_graphs_request_id(simulator: RunningSimulator) -> None:
    ids = new_ids(3)
    seen = Exchanges()
    async with graph_client(simulator, exchanges=seen) as client:
        result = await client.post_action(ACTION, ids, "crid-1")
    assert isinstance(result, Accepted)
    assert result.status == 204
    assert result.client_request_id == "crid-1"
    assert result.request_id is not None
    assert result.request_id == seen.responses[0].headers["request-id"]
    assert applied(simulator) == ids


@pytest.mark.anyio
async def test_the_request_carries_ids_token_and_client_request_id(
    simulator: RunningSimulator,
) -> None:
    ids = new_ids(2)
    seen = Exchanges()
    async with graph_client(simulator, exchanges=seen) as client:
        await client.post_action(ACTION, ids, "crid-echo-42")
    request, response = seen.requests[0], seen.responses[0]
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {TEST_TOKEN}"
    assert request.headers["client-request-id"] == "crid-echo-42"
    assert request.headers["return-client-request-id"] == "true"
    assert request.headers["user-agent"].startswith("batcher/")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"userIds": ids}
    # Graph (and the simulator) echo the client-request-id so both sides can be matched.
    assert response.headers["client-request-id"] == "crid-echo-42"


@pytest.mark.anyio
@pytest.mark.parametrize("api_version", ["v1.0", "beta"])
async def test_url_path_per_api_version(simulator: RunningSimulator, api_version: str) -> None:
    seen = Exchanges()
    ids = new_ids(1)
    async with graph_client(
        simulator, api_version=api_version, base_url=simulator.url + "/", exchanges=seen
    ) as client:
        await client.post_action(ACTION, ids, "crid")
    assert seen.requests[0].url.path == f"/{api_version}/identityProtection/riskyUsers/{ACTION}"
    assert applied(simulator) == ids


# -- simulated faults ----------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("500", "generalException"),
        ("502", "BadGateway"),
        ("503", "serviceNotAvailable"),
        ("504", "GatewayTimeout"),
    ],
)
async def test_5xx_is_server_error(simulator_factory: Any, fault: str, code: str) -> None:
    server = simulator_factory(settings(faults={fault: 1.0}))
    seen = Exchanges()
    async with graph_client(server, exchanges=seen) as client:
        with pytest.raises(ServerError) as raised:
            await client.post_action(ACTION, new_ids(2), "crid-5xx")
    error = raised.value
    assert error.status == int(fault)
    assert error.code == code
    assert error.retry_after is None
    assert error.client_request_id == "crid-5xx"
    assert error.request_id == seen.responses[0].headers["request-id"]
    assert applied(server) == []


@pytest.mark.anyio
async def test_503_with_retry_after_carries_it(simulator_factory: Any) -> None:
    server = simulator_factory(settings(faults={"503": 1.0}, retry_after_seconds=2.5))
    async with graph_client(server) as client:
        with pytest.raises(ServerError) as raised:
            await client.post_action(ACTION, new_ids(1), "crid")
    assert raised.value.status == 503
    assert raised.value.retry_after == 2.5


@pytest.mark.anyio
async def test_429_fault_is_throttled_without_retry_after(simulator_factory: Any) -> None:
    server = simulator_factory(settings(faults={"429": 1.0}))
    async with graph_client(server) as client:
        with pytest.raises(Throttled) as raised:
            await client.post_action(ACTION, new_ids(1), "crid")
    assert raised.value.status == 429
    assert raised.value.code == "TooManyRequests"
    assert raised.value.retry_after is None
    assert raised.value.request_id
    assert applied(server) == []


@pytest.mark.anyio
async def test_reset_is_no_answer_and_nothing_was_applied(simulator_factory: Any) -> None:
    server = simulator_factory(settings(faults={"reset": 1.0}))
    async with graph_client(server) as client:
        with pytest.raises(NoAnswer) as raised:
            await client.post_action(ACTION, new_ids(2), "crid-reset")
    assert raised.value.status is None
    assert raised.value.client_request_id == "crid-reset"
    assert server.simulator.record.faults["reset"] == 1
    assert applied(server) == []


@pytest.mark.anyio
async def test_lost_answer_is_no_answer_although_graph_applied_it(
    simulator_factory: Any,
) -> None:
    server = simulator_factory(settings(faults={"lost": 1.0}))
    ids = new_ids(3)
    async with graph_client(server) as client:
        with pytest.raises(NoAnswer):
            await client.post_action(ACTION, ids, "crid-lost")
    assert server.simulator.record.faults["lost"] == 1
    assert applied(server) == ids  # why a lost answer must be recorded as "unknown"


@pytest.mark.anyio
async def test_hang_past_the_client_timeout_is_no_answer(simulator_factory: Any) -> None:
    server = simulator_factory(settings(faults={"hang": 1.0}, hang_seconds=0.3))
    async with graph_client(server, timeout=0.1) as client:
        with pytest.raises(NoAnswer) as raised:
            await client.post_action(ACTION, new_ids(1), "crid-hang")
    assert "in time" in raised.value.message
    assert raised.value.client_request_id == "crid-hang"
    assert server.simulator.record.faults["hang"] == 1
    assert applied(server) == []


@pytest.mark.anyio
async def test_refused_connection_is_no_answer() -> None:
    # A port that is bound but not listening refuses connections, and nobody else can take it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        async with httpx.AsyncClient(timeout=2.0) as http:
            client = GraphClient(http, url, "v1.0", StaticToken(TEST_TOKEN))
            with pytest.raises(NoAnswer) as raised:
                await client.post_action(ACTION, new_ids(1), "crid-refused")
    assert "connection failed" in raised.value.message
    assert raised.value.client_request_id == "crid-refused"


# -- permanent answers ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_more_than_60_ids_is_bad_request_with_graphs_code(
    simulator: RunningSimulator,
) -> None:
    async with graph_client(simulator) as client:
        await client.post_action(ACTION, new_ids(60), "crid-60")  # the limit itself is fine
        with pytest.raises(BadRequest) as raised:
            await client.post_action(ACTION, new_ids(61), "crid-61")
    assert raised.value.status == 400
    assert raised.value.code == "invalidRequest"
    assert "60" in raised.value.message
    assert len(applied(simulator)) == 60


@pytest.mark.anyio
async def test_a_malformed_id_is_bad_request(simulator: RunningSimulator) -> None:
    async with graph_client(simulator) as client:
        with pytest.raises(BadRequest) as raised:
            await client.post_action(ACTION, [*new_ids(2), "not-a-guid"], "crid")
    assert raised.value.code == "invalidRequest"
    assert applied(simulator) == []


@pytest.mark.anyio
async def test_unknown_action_is_rejected(simulator: RunningSimulator) -> None:
    async with graph_client(simulator) as client:
        with pytest.raises(Rejected) as raised:
            await client.post_action("compromiseEverything", new_ids(1), "crid")
    assert raised.value.status == 404
    assert raised.value.code == "Request_ResourceNotFound"


@pytest.mark.anyio
async def test_bad_token_is_unauthorized(simulator: RunningSimulator) -> None:
    async with graph_client(simulator, tokens=StaticToken("wrong-token")) as client:
        with pytest.raises(Unauthorized) as raised:
            await client.post_action(ACTION, new_ids(1), "crid")
    assert raised.value.status == 401
    assert raised.value.code == "InvalidAuthenticationToken"
    assert applied(simulator) == []


class RefreshableToken:
    """A TokenSource whose current token is stale until invalidated, as after an expiry."""

    def __init__(self, stale: str, fresh: str) -> None:
        self.current = stale
        self.fresh = fresh
        self.invalidations = 0

    async def token(self) -> str:
        return self.current

    def invalidate(self) -> None:
        self.invalidations += 1
        self.current = self.fresh


@pytest.mark.anyio
async def test_a_401_drops_the_token_so_the_next_try_signs_in_afresh(
    simulator: RunningSimulator,
) -> None:
    tokens = RefreshableToken(stale="expired-token", fresh=TEST_TOKEN)
    ids = new_ids(1)
    async with graph_client(simulator, tokens=tokens) as client:
        with pytest.raises(Unauthorized):
            await client.post_action(ACTION, ids, "crid-1")
        assert tokens.invalidations == 1
        result = await client.post_action(ACTION, ids, "crid-2")
    assert result.status == 204
    assert applied(simulator) == ids


@pytest.mark.anyio
async def test_other_errors_keep_the_token(simulator_factory: Any) -> None:
    server = simulator_factory(settings(faults={"500": 1.0}))
    tokens = RefreshableToken(stale=TEST_TOKEN, fresh="never-used")
    async with graph_client(server, tokens=tokens) as client:
        with pytest.raises(ServerError):
            await client.post_action(ACTION, new_ids(1), "crid")
    assert tokens.invalidations == 0


@pytest.mark.anyio
async def test_the_tenant_budget_throttles_a_second_quick_request(simulator_factory: Any) -> None:
    server = simulator_factory(settings(rate_per_second=0.01, burst=1))
    first, second = new_ids(1), new_ids(1)
    async with graph_client(server) as client:
        await client.post_action(ACTION, first, "crid-1")
        with pytest.raises(Throttled) as raised:
            await client.post_action(ACTION, second, "crid-2")
    assert raised.value.status == 429
    assert raised.value.retry_after is None  # Graph sends none for these APIs
    assert applied(server) == first


# -- Retry-After -------------------------------------------------------------------------------
NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("0.25", 0.25),
        ("1.5", 1.5),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # already past: go now
        ("-5", 0.0),
    ],
)
def test_parse_retry_after(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "5 seconds", "Wed, 99 Oct 2015 07:28:00 GMT", "nan", "inf", "1e999"],
)
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.fixture
def local_time_zone_not_utc() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.mark.usefixtures("local_time_zone_not_utc")
def test_parse_retry_after_reads_a_date_without_zone_as_gmt() -> None:
    when = email.utils.formatdate(NOW + 60, usegmt=True).removesuffix(" GMT")
    assert parse_retry_after(when, now=NOW) == pytest.approx(60.0)


def test_parse_retry_after_defaults_to_the_current_time() -> None:
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    assert 3500 < (parse_retry_after(later) or 0) <= 3600
