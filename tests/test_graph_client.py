"""GraphClient against the simulator (in-process) and odd answers: every answer, and every
missing one, becomes the right result; the bearer flow; JSON batches; OData filters."""

from __future__ import annotations

import dataclasses
import email.utils
import json
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import trustme

from batcher.actions import ACTIONS
from batcher.auth import StaticToken, TokenSource
from batcher.errors import (
    AuthError,
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
from batcher.graph import (
    MAX_BATCH,
    USER_FIELDS,
    Accepted,
    GraphClient,
    InnerAnswer,
    InnerRequest,
    action_request,
    answer_of,
    error_for,
    http_client,
    literal,
    match_any,
    match_proxy,
    parse_retry_after,
    users_query,
)
from batcher.ledger import Outcome
from batcher.simulator import DirectoryUser, GraphSimulator, RunningSimulator
from tests.helpers import FAST, GRAPH, TEST_TOKEN, ids

CONFIRM = ACTIONS["confirm"]
DISABLE = ACTIONS["disable"]
APPLIED = "confirmCompromised"  # the simulator's record is keyed by Graph's action name
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client reads proxies from the environment (unless given a transport): requests to a
    closed loopback port, a `.invalid` name or a TLS server here must not go to a CI's proxy."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def simulator(users: list[DirectoryUser] | None = None, **changes: Any) -> GraphSimulator:
    return GraphSimulator(FAST.model_copy(update=changes), tokens={TEST_TOKEN}, users=users)


class Exchanges:
    """httpx event hooks that keep every request and response the client really exchanged."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.headers: list[dict[str, str]] = []  # as each request left (auth changes them)
        self.responses: list[httpx.Response] = []

    async def on_request(self, request: httpx.Request) -> None:
        self.requests.append(request)
        self.headers.append(dict(request.headers))

    async def on_response(self, response: httpx.Response) -> None:
        self.responses.append(response)


@asynccontextmanager
async def graph(
    transport: httpx.AsyncBaseTransport | GraphSimulator | None,
    *,
    tokens: TokenSource | None = None,
    base_url: str = GRAPH,
    api_version: str = "v1.0",
    timeout: float = 5.0,
    verify: ssl.SSLContext | bool = True,
    seen: Exchanges | None = None,
) -> AsyncIterator[GraphClient]:
    if isinstance(transport, GraphSimulator):
        transport = transport.transport()
    http = http_client(
        tokens if tokens is not None else StaticToken(TEST_TOKEN),
        timeout=timeout,
        verify=verify,
        transport=transport,
    )
    if seen is not None:
        http.event_hooks = {"request": [seen.on_request], "response": [seen.on_response]}
    async with http:
        yield GraphClient(http, base_url, api_version)


def answering(
    status: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
    seen: list[httpx.Request] | None = None,
) -> httpx.MockTransport:
    """A transport that gives every request the same answer (odd ones included)."""

    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        content = body if isinstance(body, bytes) else None
        data = None if isinstance(body, bytes) or body is None else body
        return httpx.Response(status, headers=headers, json=data, content=content)

    return httpx.MockTransport(handle)


def failing(exc: Callable[[httpx.Request], Exception]) -> httpx.MockTransport:
    """A transport on which every request fails as ``exc`` says (no HTTP answer at all)."""

    def handle(request: httpx.Request) -> httpx.Response:
        raise exc(request)

    return httpx.MockTransport(handle)


def graph_error(code: str, message: str = "it went wrong", request_id: str = "inner-rid") -> Any:
    return {"error": {"code": code, "message": message, "innerError": {"request-id": request_id}}}


# -- success -------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_204_is_accepted_with_graphs_request_id() -> None:
    sim, users, seen = simulator(), ids(3), Exchanges()
    async with graph(sim, seen=seen) as client:
        result = await client.post_ids(CONFIRM, users, "crid-1")
    assert isinstance(result, Accepted)
    assert result.status == 204
    assert result.client_request_id == "crid-1"
    assert result.request_id is not None
    assert result.request_id == seen.responses[0].headers["request-id"]
    assert sim.record.accepted[APPLIED] == users
    assert answer_of(None, result.status, result.request_id).outcome is Outcome.ACCEPTED


@pytest.mark.anyio
async def test_the_request_carries_ids_token_and_client_request_id() -> None:
    sim, users, seen = simulator(), ids(2), Exchanges()
    async with graph(sim, seen=seen) as client:
        await client.post_ids(CONFIRM, users, "crid-echo-42")
    [request], [response] = seen.requests, seen.responses
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {TEST_TOKEN}"
    assert request.headers["client-request-id"] == "crid-echo-42"
    assert request.headers["return-client-request-id"] == "true"
    assert request.headers["user-agent"].startswith("batcher/")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"userIds": users}
    # Graph (and the simulator) echo the client-request-id so both sides can be matched.
    assert response.headers["client-request-id"] == "crid-echo-42"


@pytest.mark.anyio
@pytest.mark.parametrize("api_version", ["v1.0", "beta"])
@pytest.mark.parametrize("action", ["confirm", "dismiss"])
async def test_url_path_per_api_version(api_version: str, action: str) -> None:
    sim, users, seen = simulator(), ids(1), Exchanges()
    async with graph(sim, base_url=GRAPH + "/", api_version=api_version, seen=seen) as client:
        assert client.root == f"{GRAPH}/{api_version}"
        assert client.host == "graph.local"
        await client.post_ids(ACTIONS[action], users, "crid")
    graph_name = ACTIONS[action].path.rsplit("/", 1)[1]
    assert seen.requests[0].url.path == (
        f"/{api_version}/identityProtection/riskyUsers/{graph_name}"
    )
    assert sim.record.accepted[graph_name] == users


@pytest.mark.anyio
async def test_a_redirect_is_not_followed() -> None:
    seen: list[httpx.Request] = []
    moved = answering(302, headers={"Location": "https://elsewhere.example/steal"}, seen=seen)
    async with graph(moved) as client:
        with pytest.raises(Rejected) as raised:
            await client.post_ids(CONFIRM, ids(1), "crid")
    assert raised.value.status == 302
    assert len(seen) == 1  # the token never went to the other host


def test_the_http_client_times_out_connecting_within_ten_seconds() -> None:
    slow = http_client(StaticToken(TEST_TOKEN), timeout=60.0)
    quick = http_client(StaticToken(TEST_TOKEN), timeout=3.0)
    assert (slow.timeout.read, slow.timeout.connect) == (60.0, 10.0)
    assert (quick.timeout.read, quick.timeout.connect) == (3.0, 3.0)
    assert slow.follow_redirects is False


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
async def test_5xx_is_server_error(fault: str, code: str) -> None:
    sim, seen = simulator(faults={fault: 1.0}), Exchanges()
    async with graph(sim, seen=seen) as client:
        with pytest.raises(ServerError) as raised:
            await client.post_ids(CONFIRM, ids(2), "crid-5xx")
    error = raised.value
    assert error.status == int(fault)
    assert error.code == code
    assert error.retry_after is None
    assert error.client_request_id == "crid-5xx"
    assert error.request_id == seen.responses[0].headers["request-id"]
    assert sim.record.accepted[APPLIED] == []
    assert answer_of(error).maybe_applied  # a 5xx may have been applied


@pytest.mark.anyio
async def test_503_with_retry_after_carries_it() -> None:
    sim = simulator(faults={"503": 1.0}, retry_after_seconds=2.5)
    async with graph(sim) as client:
        with pytest.raises(ServerError) as raised:
            await client.post_ids(CONFIRM, ids(1), "crid")
    assert raised.value.status == 503
    assert raised.value.retry_after == 2.5


@pytest.mark.anyio
async def test_429_fault_is_throttled_without_retry_after() -> None:
    sim = simulator(faults={"429": 1.0})
    async with graph(sim) as client:
        with pytest.raises(Throttled) as raised:
            await client.post_ids(CONFIRM, ids(1), "crid")
    assert raised.value.status == 429
    assert raised.value.code == "TooManyRequests"
    assert raised.value.retry_after is None
    assert raised.value.request_id
    assert sim.record.accepted[APPLIED] == []
    assert not answer_of(raised.value).maybe_applied


@pytest.mark.anyio
async def test_the_tenant_budget_throttles_a_second_quick_request() -> None:
    sim = simulator(rate_per_second=0.01, burst=1)
    first, second = ids(1, seed=1), ids(1, seed=2)
    async with graph(sim) as client:
        await client.post_ids(CONFIRM, first, "crid-1")
        with pytest.raises(Throttled) as raised:
            await client.post_ids(CONFIRM, second, "crid-2")
    assert raised.value.status == 429
    assert raised.value.retry_after is None  # Graph sends none for these APIs
    assert sim.record.accepted[APPLIED] == first


@pytest.mark.anyio
async def test_reset_is_no_answer_and_nothing_was_applied() -> None:
    sim = simulator(faults={"reset": 1.0})
    async with graph(sim) as client:
        with pytest.raises(NoAnswer) as raised:
            await client.post_ids(CONFIRM, ids(2), "crid-reset")
    error = raised.value
    assert not isinstance(error, NotConnected)  # the request left: it may have been applied
    assert error.status is None
    assert error.client_request_id == "crid-reset"
    assert error.host == "graph.local"
    assert "connection broke" in error.cause
    assert sim.record.faults["reset"] == 1
    assert sim.record.accepted[APPLIED] == []


@pytest.mark.anyio
async def test_lost_answer_is_no_answer_although_graph_applied_it() -> None:
    sim, users = simulator(faults={"lost": 1.0}), ids(3)
    async with graph(sim) as client:
        with pytest.raises(NoAnswer) as raised:
            await client.post_ids(CONFIRM, users, "crid-lost")
    assert not isinstance(raised.value, NotConnected)
    assert sim.record.faults["lost"] == 1
    assert sim.record.accepted[APPLIED] == users  # why a lost answer must be recorded "unknown"
    answer = answer_of(raised.value)
    assert (answer.outcome, answer.maybe_applied) == (Outcome.NO_ANSWER, True)


@pytest.mark.anyio
async def test_hang_past_the_client_timeout_is_no_answer() -> None:
    sim = simulator(faults={"hang": 1.0}, hang_seconds=1.0)
    async with graph(sim, timeout=0.05) as client:
        with pytest.raises(NoAnswer) as raised:
            await client.post_ids(CONFIRM, ids(1), "crid-hang")
    assert not isinstance(raised.value, NotConnected)
    assert raised.value.cause == "no answer in time"
    assert "in time" in raised.value.message
    assert raised.value.client_request_id == "crid-hang"
    assert sim.record.faults["hang"] == 1
    assert sim.record.accepted[APPLIED] == []


# -- no connection: the request never left ---------------------------------------------------------
@pytest.mark.anyio
async def test_a_refused_connection_is_not_connected() -> None:
    # A port that is bound but not listening refuses connections, and nobody else can take it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        async with graph(None, base_url=url, timeout=2.0) as client:
            with pytest.raises(NotConnected) as raised:
                await client.post_ids(CONFIRM, ids(1), "crid-refused")
    error = raised.value
    assert error.cause == "the connection was refused"
    assert error.host == "127.0.0.1"
    assert error.message == "no answer from 127.0.0.1: the connection was refused"
    assert error.client_request_id == "crid-refused"
    answer = answer_of(error)
    assert (answer.outcome, answer.maybe_applied) == (Outcome.NOT_CONNECTED, False)


@pytest.mark.anyio
async def test_a_name_that_does_not_resolve_is_not_connected() -> None:
    async with graph(None, base_url="http://graph.batcher.invalid", timeout=2.0) as client:
        with pytest.raises(NotConnected) as raised:
            await client.post_ids(CONFIRM, ids(1), "crid-dns")
    assert raised.value.cause == "the name does not resolve (DNS)"
    assert raised.value.host == "graph.batcher.invalid"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("errno", "text"),
    [
        (socket.EAI_NONAME, "Name or service not known"),
        (socket.EAI_AGAIN, "Temporary failure in name resolution"),  # no DNS server answers
        (11001, "getaddrinfo failed"),  # Windows
    ],
    ids=["no-such-name", "no-dns-server", "windows"],
)
async def test_every_failed_name_lookup_is_a_dns_cause(errno: int, text: str) -> None:
    def unresolved(request: httpx.Request) -> Exception:
        try:
            raise socket.gaierror(errno, text)
        except socket.gaierror as exc:
            error = httpx.ConnectError(f"[Errno {errno}] {text}", request=request)
            error.__cause__ = exc
            return error

    async with graph(failing(unresolved)) as client:
        with pytest.raises(NotConnected) as raised:
            await client.post_ids(CONFIRM, ids(1), "crid")
    assert raised.value.cause == "the name does not resolve (DNS)"


@pytest.fixture(scope="module")
def tls_server_pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A server certificate from a CA nobody trusts (but this test, when it wants to)."""
    where = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(where / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(where / "server.pem")
    )
    return where / "server.pem", where / "ca.pem"


@pytest.mark.anyio
async def test_an_untrusted_tls_certificate_is_not_connected(
    tls_server_pem: tuple[Path, Path],
) -> None:
    server_pem, ca_pem = tls_server_pem
    sim = simulator()
    with RunningSimulator(sim, ssl_certfile=server_pem, ssl_keyfile=server_pem) as server:
        async with graph(None, base_url=server.url) as client:
            with pytest.raises(NotConnected) as raised:
                await client.post_ids(CONFIRM, ids(1), "crid-tls")
        assert raised.value.cause == "its TLS certificate is not trusted"
        assert raised.value.host == "127.0.0.1"
        assert sim.record.accepted[APPLIED] == []
        trusted = ssl.create_default_context(cafile=str(ca_pem))  # the same server, trusted
        async with graph(None, base_url=server.url, verify=trusted) as client:
            assert (await client.post_ids(CONFIRM, ids(1), "crid-ok")).status == 204


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("exc", "kind", "cause"),
    [
        (httpx.ConnectTimeout, NotConnected, "no connection in time"),
        (httpx.PoolTimeout, NotConnected, "no connection in time"),
        (httpx.ConnectError, NotConnected, "no connection (ConnectError)"),
        (httpx.ReadTimeout, NoAnswer, "no answer in time"),
        (httpx.WriteTimeout, NoAnswer, "no answer in time"),
        (httpx.ReadError, NoAnswer, "the connection broke before the answer (ReadError)"),
        (
            httpx.RemoteProtocolError,
            NoAnswer,
            "the connection broke before the answer (RemoteProtocolError)",
        ),
    ],
)
async def test_a_missing_answer_says_whether_the_request_left(
    exc: type[httpx.TransportError], kind: type[NoAnswer], cause: str
) -> None:
    async with graph(failing(lambda request: exc("boom", request=request))) as client:
        with pytest.raises(NoAnswer) as raised:
            await client.post_ids(CONFIRM, ids(1), "crid")
    assert type(raised.value) is kind
    assert raised.value.cause == cause
    assert answer_of(raised.value).maybe_applied is (kind is NoAnswer)


# -- permanent answers ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_more_than_60_ids_is_bad_request_with_graphs_code() -> None:
    sim = simulator()
    async with graph(sim) as client:
        await client.post_ids(CONFIRM, ids(60), "crid-60")  # the limit itself is fine
        with pytest.raises(BadRequest) as raised:
            await client.post_ids(CONFIRM, ids(61, seed=2), "crid-61")
    assert raised.value.status == 400
    assert raised.value.code == "invalidRequest"
    assert "60" in raised.value.message
    assert len(sim.record.accepted[APPLIED]) == 60


@pytest.mark.anyio
async def test_a_malformed_id_is_bad_request() -> None:
    sim = simulator()
    async with graph(sim) as client:
        with pytest.raises(BadRequest) as raised:
            await client.post_ids(CONFIRM, [*ids(2), "not-a-guid"], "crid")
    assert raised.value.code == "invalidRequest"
    assert sim.record.accepted[APPLIED] == []


@pytest.mark.anyio
async def test_an_unknown_endpoint_is_not_found() -> None:
    sim = simulator()
    nonsense = dataclasses.replace(CONFIRM, path="/identityProtection/riskyUsers/compromiseAll")
    async with graph(sim) as client:
        with pytest.raises(NotFound) as raised:
            await client.post_ids(nonsense, ids(1), "crid")
    assert raised.value.status == 404
    assert raised.value.code == "Request_ResourceNotFound"


@pytest.mark.anyio
async def test_permission_denied_is_forbidden() -> None:
    sim = simulator(permission_denied=True)
    async with graph(sim) as client:
        with pytest.raises(Forbidden) as raised:
            await client.post_ids(CONFIRM, ids(1), "crid")
    assert raised.value.code == "Authorization_RequestDenied"


ERROR_CLASSES = [
    (400, BadRequest),
    (401, Unauthorized),
    (403, Forbidden),
    (404, NotFound),
    (405, Rejected),
    (409, Rejected),
    (418, Rejected),
    (429, Throttled),
    (500, ServerError),
    (501, ServerError),
    (502, ServerError),
    (503, ServerError),
    (504, ServerError),
    (507, ServerError),
]


@pytest.mark.parametrize(("status", "kind"), ERROR_CLASSES)
def test_every_status_maps_to_its_error_class_with_graphs_code(
    status: int, kind: type[GraphError]
) -> None:
    error = error_for(
        status,
        graph_error("someCode", "what Graph said", "inner-rid"),
        {"Request-Id": "header-rid", "Retry-After": "3"},
        "crid",
    )
    assert type(error) is kind
    assert error.status == status
    assert error.code == "someCode"
    assert error.message == f"HTTP {status} someCode: what Graph said"
    assert error.request_id == "header-rid"  # the header, when there is one
    assert error.client_request_id == "crid"
    assert error.retry_after == 3.0


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "kind"), [e for e in ERROR_CLASSES if e[0] != 401])
async def test_the_client_raises_each_error_class(status: int, kind: type[GraphError]) -> None:
    odd = answering(status, graph_error("someCode"), {"request-id": "rid-1"})
    async with graph(odd) as client:
        with pytest.raises(GraphError) as raised:
            await client.post_ids(CONFIRM, ids(1), "crid")
    assert type(raised.value) is kind
    assert (raised.value.code, raised.value.request_id) == ("someCode", "rid-1")


@pytest.mark.parametrize(
    ("body", "code", "message", "request_id"),
    [
        (graph_error("c", "m", "inner-1"), "c", "HTTP 409 c: m", "inner-1"),
        ({"error": {"code": "c", "innererror": {"request-id": "low"}}}, "c", None, "low"),
        ("<html>proxy says no</html>", None, "HTTP 409 Conflict: <html>proxy says no</html>", None),
        (None, None, "HTTP 409 Conflict: no message", None),
        ({"error": "flat"}, None, "HTTP 409 Conflict: no message", None),
        ([1, 2], None, "HTTP 409 Conflict: no message", None),
        ({"error": {"code": 7, "message": ["x"]}}, None, "HTTP 409 Conflict: no message", None),
    ],
    ids=["graph", "lower-innererror", "text", "empty", "flat", "list", "odd-types"],
)
def test_odd_error_bodies_still_give_a_message(
    body: Any, code: str | None, message: str | None, request_id: str | None
) -> None:
    error = error_for(409, body, {}, "crid")
    assert error.code == code
    if message is not None:
        assert error.message == message
    assert error.request_id == request_id
    assert error.retry_after is None


@pytest.mark.anyio
async def test_a_non_json_error_body_is_quoted_in_the_message() -> None:
    odd = answering(502, b"<html>Bad Gateway from the proxy</html>")
    async with graph(odd) as client:
        with pytest.raises(ServerError) as raised:
            await client.post_ids(CONFIRM, ids(1), "crid")
    assert "Bad Gateway from the proxy" in raised.value.message
    assert raised.value.code is None


def test_answer_of_records_each_error_as_its_outcome() -> None:
    cases = {
        Throttled("x", status=429): Outcome.THROTTLED,
        ServerError("x", status=503): Outcome.SERVER_ERROR,
        NoAnswer("x"): Outcome.NO_ANSWER,
        NotConnected("x"): Outcome.NOT_CONNECTED,
        BadRequest("x", status=400): Outcome.BAD_REQUEST,
        Unauthorized("x", status=401): Outcome.UNAUTHORIZED,
        Forbidden("x", status=403): Outcome.FORBIDDEN,
        NotFound("x", status=404): Outcome.NOT_FOUND,
        Rejected("x", status=409): Outcome.REJECTED,
        GraphError("x"): Outcome.REJECTED,
    }
    for error, outcome in cases.items():
        assert answer_of(error).outcome is outcome
    detailed = answer_of(
        Forbidden("HTTP 403 denied: no", status=403, code="denied", request_id="rid")
    )
    assert (detailed.http_status, detailed.error_code, detailed.request_id) == (
        403,
        "denied",
        "rid",
    )
    assert detailed.error_message == "HTTP 403 denied: no"
    accepted = answer_of(None, 204, "rid-ok")
    assert (accepted.outcome, accepted.http_status, accepted.request_id) == (
        Outcome.ACCEPTED,
        204,
        "rid-ok",
    )


# -- the bearer token ----------------------------------------------------------------------------
class RefreshableToken:
    """A TokenSource whose tokens come from a list, one per sign-in (after each invalidate)."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.invalidations = 0
        self.refused_after_refresh = False

    async def token(self) -> str:
        return self.tokens[min(self.invalidations, len(self.tokens) - 1)]

    def invalidate(self) -> None:
        self.invalidations += 1

    def close(self) -> None:
        pass


@pytest.mark.anyio
async def test_a_401_gets_one_fresh_sign_in_and_the_request_again() -> None:
    sim, users, seen = simulator(), ids(1), Exchanges()
    tokens = RefreshableToken("expired-token", TEST_TOKEN)
    async with graph(sim, tokens=tokens, seen=seen) as client:
        result = await client.post_ids(CONFIRM, users, "crid-1")
    assert result.status == 204
    assert tokens.invalidations == 1
    assert [h["authorization"] for h in seen.headers] == [
        "Bearer expired-token",
        f"Bearer {TEST_TOKEN}",
    ]
    assert [r.headers["client-request-id"] for r in seen.requests] == ["crid-1", "crid-1"]
    assert [r.status_code for r in seen.responses] == [401, 204]
    assert sim.record.accepted[APPLIED] == users


@pytest.mark.anyio
async def test_a_second_401_stops_with_graphs_code_and_request_id() -> None:
    sim, seen = simulator(), Exchanges()
    tokens = RefreshableToken("expired-token", "also-refused")
    async with graph(sim, tokens=tokens, seen=seen) as client:
        with pytest.raises(AuthError) as raised:
            await client.post_ids(CONFIRM, ids(1), "crid")
    message = str(raised.value)
    assert "twice" in message
    assert "InvalidAuthenticationToken" in message
    assert seen.responses[-1].headers["request-id"] in message
    assert "run the same command" in message
    assert tokens.invalidations == 2  # the refused token is not kept either
    assert len(seen.requests) == 2
    assert sim.record.accepted[APPLIED] == []


@pytest.mark.anyio
async def test_a_static_token_refused_stops_at_once() -> None:
    sim, seen = simulator(), Exchanges()
    async with graph(sim, tokens=StaticToken("wrong-token"), seen=seen) as client:
        with pytest.raises(AuthError, match="cannot be renewed") as raised:
            await client.post_ids(CONFIRM, ids(1), "crid")
    assert "InvalidAuthenticationToken" in str(raised.value)
    assert seen.responses[0].headers["request-id"] in str(raised.value)
    assert len(seen.requests) == 1  # no point sending the same token again


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "kind"), [("500", ServerError), ("429", Throttled), ("503", ServerError)]
)
async def test_other_errors_keep_the_token(fault: str, kind: type[GraphError]) -> None:
    sim = simulator(faults={fault: 1.0})
    tokens = RefreshableToken(TEST_TOKEN, "never-used")
    async with graph(sim, tokens=tokens) as client:
        with pytest.raises(kind):
            await client.post_ids(CONFIRM, ids(1), "crid")
    assert tokens.invalidations == 0


@pytest.mark.anyio
async def test_a_403_keeps_the_token() -> None:
    tokens = RefreshableToken(TEST_TOKEN, "never-used")
    async with graph(simulator(permission_denied=True), tokens=tokens) as client:
        with pytest.raises(Forbidden):
            await client.post_ids(CONFIRM, ids(1), "crid")
    assert tokens.invalidations == 0


# -- JSON batches --------------------------------------------------------------------------------
def directory_users(n: int, **changes: Any) -> list[DirectoryUser]:
    return [
        DirectoryUser(id=uid, userPrincipalName=f"user{k}@contoso.com", **changes)
        for k, uid in enumerate(ids(n, seed=7))
    ]


@pytest.mark.anyio
async def test_a_json_batch_answers_each_request_by_its_id() -> None:
    people = directory_users(6)
    sim = simulator(users=people)
    missing = ids(1, seed=99)[0]  # not in the directory
    targets = [u.id for u in people] + [missing]
    requests = [action_request(DISABLE, uid, f"r{n}") for n, uid in enumerate(targets)]
    seen = Exchanges()
    async with graph(sim, seen=seen) as client:
        result = await client.batch(requests, "crid-batch")
    assert result.status == 200
    assert result.request_id == seen.responses[0].headers["request-id"]
    by_id = {a.id: a for a in result.answers}
    assert set(by_id) == {r.id for r in requests}
    for n in range(6):
        assert by_id[f"r{n}"].status == 204
        assert by_id[f"r{n}"].error("crid-batch") is None
    error = by_id["r6"].error("crid-batch")
    assert isinstance(error, NotFound)
    assert error.request_id == by_id["r6"].request_id
    assert error.client_request_id == "crid-batch"
    assert all(not u.accountEnabled for u in people)
    assert sim.record.succeeded("disable") == [u.id for u in people]
    body = json.loads(seen.requests[0].content)
    assert seen.requests[0].url.path == "/v1.0/$batch"
    assert body["requests"][0] == {
        "id": "r0",
        "method": "PATCH",
        "url": f"/users/{people[0].id}",
        "headers": {"Content-Type": "application/json"},
        "body": {"accountEnabled": False},
    }


@pytest.mark.anyio
async def test_inner_answers_are_matched_by_id_in_whatever_order_they_come() -> None:
    answers = {
        "responses": [
            {"id": 2, "status": 404, "body": graph_error("Request_ResourceNotFound")},
            {"id": "0", "status": 204, "headers": {"Request-Id": "rid-0"}},
            {"id": "1", "status": 429, "headers": {"retry-after": "7"}},
            "not an answer",
        ]
    }
    requests = [InnerRequest(str(n), "POST", f"/users/{n}/revokeSignInSessions") for n in range(3)]
    async with graph(answering(200, answers)) as client:
        result = await client.batch(requests, "crid")
    by_id = {a.id: a for a in result.answers}
    assert set(by_id) == {"0", "1", "2"}
    assert by_id["0"].request_id == "rid-0"  # header names in any case
    assert by_id["0"].error("crid") is None
    throttled = by_id["1"].error("crid")
    assert isinstance(throttled, Throttled)
    assert throttled.retry_after == 7.0
    assert isinstance(by_id["2"].error("crid"), NotFound)


@pytest.mark.anyio
async def test_an_inner_429_from_the_directory_budget_carries_retry_after() -> None:
    people = directory_users(3)
    sim = simulator(users=people, directory_writes_per_second=0.1, directory_writes_burst=1)
    requests = [action_request(DISABLE, u.id, str(n)) for n, u in enumerate(people)]
    async with graph(sim) as client:
        result = await client.batch(requests, "crid")
    errors = [a.error("crid") for a in result.answers]
    throttled = [e for e in errors if isinstance(e, Throttled)]
    assert len(throttled) == 2 and errors.count(None) == 1
    for error in throttled:
        assert error.retry_after is not None and error.retry_after >= 1
        assert error.code == "TooManyRequests"
        assert error.request_id


@pytest.mark.anyio
async def test_an_administrator_is_refused_alone_in_a_batch() -> None:
    people = directory_users(2)
    people[1].privileged = True
    sim = simulator(users=people)
    requests = [action_request(DISABLE, u.id, str(n)) for n, u in enumerate(people)]
    async with graph(sim) as client:
        result = await client.batch(requests, "crid")
    by_id = {a.id: a.error("crid") for a in result.answers}
    assert by_id["0"] is None
    assert isinstance(by_id["1"], Forbidden)


@pytest.mark.anyio
async def test_a_batch_holds_one_to_twenty_requests() -> None:
    seen: list[httpx.Request] = []
    many = [InnerRequest(str(n), "GET", "/users") for n in range(MAX_BATCH + 1)]
    async with graph(answering(200, {"responses": []}, seen=seen)) as client:
        with pytest.raises(ValueError, match="1 to 20"):
            await client.batch(many, "crid")
        with pytest.raises(ValueError, match="1 to 20"):
            await client.batch([], "crid")
        assert seen == []  # refused before anything left
        await client.batch(many[:MAX_BATCH], "crid")
    assert len(json.loads(seen[0].content)["requests"]) == 20


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "kind"), [("503", ServerError), ("429", Throttled), ("reset", NoAnswer)]
)
async def test_an_outer_batch_error_raises(fault: str, kind: type[GraphError]) -> None:
    people = directory_users(2)
    sim = simulator(users=people, faults={fault: 1.0})
    requests = [action_request(DISABLE, u.id, str(n)) for n, u in enumerate(people)]
    async with graph(sim) as client:
        with pytest.raises(kind):
            await client.batch(requests, "crid")
    assert sim.record.succeeded("disable") == []


@pytest.mark.anyio
async def test_a_lost_batch_was_applied_although_no_answer_came() -> None:
    people = directory_users(2)
    sim = simulator(users=people, faults={"lost": 1.0})
    requests = [action_request(DISABLE, u.id, str(n)) for n, u in enumerate(people)]
    async with graph(sim) as client:
        with pytest.raises(NoAnswer):
            await client.batch(requests, "crid")
    assert sorted(sim.record.succeeded("disable")) == sorted(u.id for u in people)


@pytest.mark.anyio
async def test_an_outer_401_on_a_batch_stops() -> None:
    sim = simulator(users=directory_users(1))
    requests = [action_request(DISABLE, ids(1, seed=7)[0], "0")]
    async with graph(sim, tokens=StaticToken("wrong")) as client:
        with pytest.raises(AuthError):
            await client.batch(requests, "crid")


def test_inner_requests_carry_a_body_only_with_its_content_type() -> None:
    revoke = action_request(ACTIONS["revoke-sessions"], "a/b c", "5")
    assert revoke.to_json() == {
        "id": "5",
        "method": "POST",
        "url": "/users/a%2Fb%20c/revokeSignInSessions",  # the user's key is one path segment
    }
    enable = action_request(ACTIONS["enable"], "u1", "6").to_json()
    assert enable["headers"] == {"Content-Type": "application/json"}
    assert enable["body"] == {"accountEnabled": True}


def test_an_inner_answer_judges_itself() -> None:
    ok = InnerAnswer("1", 200, {"REQUEST-ID": "rid"})
    assert ok.error("crid") is None
    assert ok.request_id == "rid"
    refused = InnerAnswer("2", 403, {}, graph_error("Authorization_RequestDenied"))
    error = refused.error("crid")
    assert isinstance(error, Forbidden)
    assert error.request_id == "inner-rid"  # from the body, when no header says it
    assert InnerAnswer("3", 0).error("crid") is not None  # no status: not a success


# -- Identity Protection reads -------------------------------------------------------------------
@pytest.mark.anyio
async def test_risky_users_are_read_back_by_state_and_one_by_one() -> None:
    sim, users = simulator(), ids(3)
    async with graph(sim) as client:
        await client.post_ids(CONFIRM, users[:2], "crid-1")
        page, link = await client.list_risky_users("confirmedCompromised", "crid-2")
        assert sorted(u["id"] for u in page) == sorted(users[:2])
        assert link is None
        assert await client.list_risky_users("dismissed", "crid-3") == ([], None)
        one = await client.get_risky_user(users[0], "crid-4")
        assert one is not None and one["riskState"] == "confirmedCompromised"
        assert await client.get_risky_user(users[2], "crid-5") is None  # 404: not risky


@pytest.mark.anyio
async def test_risky_users_follow_the_next_link_as_given() -> None:
    seen: list[httpx.Request] = []
    pages = {
        None: {"value": [{"id": "a"}], "@odata.nextLink": f"{GRAPH}/v1.0/next?$skiptoken=x"},
        "next": {"value": [{"id": "b"}]},
    }

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        key = "next" if request.url.path.endswith("/next") else None
        return httpx.Response(200, json=pages[key])

    async with graph(httpx.MockTransport(handle)) as client:
        first, link = await client.list_risky_users("it's", "crid")
        assert [u["id"] for u in first] == ["a"]
        assert link is not None
        second, end = await client.list_risky_users("it's", "crid", link)
    assert [u["id"] for u in second] == ["b"] and end is None
    assert unquote(seen[0].url.query.decode()) == "$filter=riskState eq 'it''s'&$top=500"
    assert str(seen[1].url) == f"{GRAPH}/v1.0/next?$skiptoken=x"


# -- Retry-After ---------------------------------------------------------------------------------
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


# -- OData filters -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "quoted"),
    [("alice@contoso.com", "'alice@contoso.com'"), ("o'brien@x.io", "'o''brien@x.io'"), ("", "''")],
)
def test_a_literal_doubles_its_quotes(value: str, quoted: str) -> None:
    assert literal(value) == quoted


def test_one_value_is_eq_and_several_are_in() -> None:
    assert match_any("mail", ["a@x.io"]) == "mail eq 'a@x.io'"
    assert match_any("userPrincipalName", ["a@x.io", "o'b@x.io"]) == (
        "userPrincipalName in ('a@x.io', 'o''b@x.io')"
    )


def test_old_aliases_match_any_proxy_address() -> None:
    assert match_proxy(["a@x.io", "b'c@x.io"]) == (
        "proxyAddresses/any(p:p eq 'smtp:a@x.io') or proxyAddresses/any(p:p eq 'smtp:b''c@x.io')"
    )


def test_users_query_encodes_every_reserved_character() -> None:
    upn = "ann+ir_fabrikam.com#EXT#@contoso.onmicrosoft.com"
    query = users_query(match_any("userPrincipalName", [upn]), "q1")
    assert (query.id, query.method, query.body) == ("q1", "GET", None)
    path, _, params = query.url.partition("?")
    assert path == "/users"
    filter_part, _, select_part = params.partition("&")
    assert "#" not in query.url and "+" not in filter_part and " " not in query.url
    assert "%23EXT%23" in filter_part and "ann%2Bir" in filter_part
    assert unquote(filter_part) == f"$filter=userPrincipalName eq '{upn}'"
    assert select_part == f"$select={','.join(USER_FIELDS)}"


@pytest.mark.anyio
async def test_a_filter_with_reserved_characters_reaches_graph_intact() -> None:
    guest = DirectoryUser(
        userPrincipalName="ann+ir_fabrikam.com#EXT#@contoso.onmicrosoft.com", userType="Guest"
    )
    other = DirectoryUser(userPrincipalName="o'brien@contoso.com", mail="o'brien@contoso.com")
    sim = simulator(users=[guest, other])
    wanted = match_any("userPrincipalName", [guest.userPrincipalName, other.userPrincipalName])
    async with graph(sim) as client:
        result = await client.batch([users_query(wanted, "q")], "crid")
    [answer] = result.answers
    assert answer.status == 200
    assert sorted(u["id"] for u in answer.body["value"]) == sorted([guest.id, other.id])
    assert sim.record.filters == [wanted]


@pytest.mark.anyio
async def test_a_proxy_that_refuses_is_not_connected_naming_the_proxy() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ProxyError("407 Proxy Authentication Required", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        client = GraphClient(http, "https://graph.microsoft.com", "v1.0")
        with pytest.raises(NotConnected) as refused:
            await client.post_ids(ACTIONS["confirm"], ["x"], "crid")
    assert "proxy refused" in refused.value.cause and "407" in refused.value.cause
    assert not answer_of(refused.value).maybe_applied  # the request never reached Graph
