"""The simulator's own contract over HTTP: what Graph and sign-in look like to a client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from batcher.auth import tenant_of
from batcher.config import SimulatorSettings
from batcher.simulator import MAX_IDS_PER_CALL, GraphSimulator, RunningSimulator
from tests.conftest import FAST, TEST_TOKEN

CONFIRM = "/v1.0/identityProtection/riskyUsers/confirmCompromised"
DISMISS = "/v1.0/identityProtection/riskyUsers/dismiss"
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
TENANT = "11111111-2222-4333-8444-555555555555"


def new_ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def settings(**changes: Any) -> SimulatorSettings:
    return FAST.model_copy(update=changes)


@pytest.fixture(scope="module")
def shared() -> Iterator[RunningSimulator]:
    """One roomy simulator for the tests that only look at their own fresh IDs: starting and
    stopping a server costs about 0.2 s. Tests that count requests or faults start their own."""
    roomy = settings(rate_per_second=1e6, burst=1000)
    with RunningSimulator(GraphSimulator(roomy, tokens={TEST_TOKEN})) as server:
        yield server


@pytest.fixture
def http(shared: RunningSimulator) -> Iterator[httpx.Client]:
    with client_for(shared) as client:
        yield client


def confirmed(server: RunningSimulator, ids: list[str]) -> list[str]:
    """Which of ``ids`` the simulator applied confirmCompromised to, in the order it did."""
    wanted = {i.lower() for i in ids}
    return [i for i in server.simulator.record.accepted["confirmCompromised"] if i in wanted]


def client_for(server: RunningSimulator) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=10.0)


def post_ids(http: httpx.Client, ids: Any, path: str = CONFIRM, **headers: str) -> httpx.Response:
    return http.post(path, json={"userIds": ids}, headers={**AUTH, **headers})


def assert_graph_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Graph's error shape, with the request-id header repeated inside the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    inner = error["innerError"]
    assert inner["request-id"] == response.headers["request-id"]
    uuid.UUID(inner["request-id"])
    assert inner["date"]
    return dict(error)


class InProcess:
    """A synchronous client for a simulator driven in-process through ``sim.transport()``:
    each call runs in its own event loop, with the test token unless ``headers`` say else."""

    base_url = "http://graph.local"

    def __init__(self, sim: GraphSimulator, timeout: float | None = None) -> None:
        self.sim = sim
        self.timeout = timeout

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = self.sim.transport(self.timeout)
            async with httpx.AsyncClient(transport=transport, base_url=self.base_url) as client:
                headers = {**AUTH, **kwargs.pop("headers", {})}
                return await client.request(method, url, headers=headers, **kwargs)

        return anyio.run(send)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def batch(self, *requests: dict[str, Any], version: str = "v1.0") -> httpx.Response:
        return self.post(f"/{version}/$batch", json={"requests": list(requests)})


def in_process(users: list[Any] | None = None, **changes: Any) -> InProcess:
    """A fresh simulator (FAST settings plus ``changes``) and a client for it."""
    return InProcess(GraphSimulator(settings(**changes), tokens={TEST_TOKEN}, users=users))


def token_request(http: httpx.Client, tenant: str = TENANT, **form: str) -> httpx.Response:
    data = {
        "grant_type": "client_credentials",
        "client_id": "app-id",
        "client_secret": "simulator-secret",
        "scope": "https://graph.microsoft.com/.default",
        **form,
    }
    return http.post(f"/{tenant}/oauth2/v2.0/token", data=data)


# -- sign-in -------------------------------------------------------------------------------------
def test_client_credentials_with_the_right_secret_get_a_usable_token(
    http: httpx.Client, shared: RunningSimulator
) -> None:
    response = token_request(http)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    token = body["access_token"]
    assert tenant_of(token) == TENANT

    ids = new_ids(1)
    answer = http.post(CONFIRM, json={"userIds": ids}, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 204
    assert confirmed(shared, ids) == ids


def test_the_token_lifetime_follows_the_settings(simulator_factory: Any) -> None:
    server = simulator_factory(settings(token_lifetime_seconds=120, client_secret="s3cret"))
    with client_for(server) as http:
        response = token_request(http, client_secret="s3cret")
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] == 120


def test_a_wrong_secret_is_refused_like_entra_does(http: httpx.Client) -> None:
    response = token_request(http, client_secret="not-the-secret")
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client"
    assert "AADSTS7000215" in body["error_description"]
    assert "access_token" not in body


def test_another_grant_type_is_refused(http: httpx.Client) -> None:
    response = token_request(http, grant_type="password")
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer made-up"}, {"Authorization": TEST_TOKEN}],
    ids=["none", "unknown-token", "no-bearer-prefix"],
)
def test_actions_need_a_known_bearer_token(
    http: httpx.Client, shared: RunningSimulator, headers: dict[str, str]
) -> None:
    ids = new_ids(1)
    response = http.post(CONFIRM, json={"userIds": ids}, headers=headers)
    assert_graph_error(response, 401, "InvalidAuthenticationToken")
    assert confirmed(shared, ids) == []


# -- the action ----------------------------------------------------------------------------------
def test_accepted_ids_are_recorded_per_action(simulator: RunningSimulator) -> None:
    confirm, dismiss = new_ids(3), new_ids(2)
    with client_for(simulator) as http:
        assert post_ids(http, [i.upper() for i in confirm]).status_code == 204
        response = post_ids(http, dismiss, path=DISMISS)
    assert response.status_code == 204
    assert response.content == b""
    uuid.UUID(response.headers["request-id"])

    record = simulator.simulator.record
    assert record.accepted["confirmCompromised"] == confirm  # recorded in lower case
    assert record.accepted["dismiss"] == dismiss
    assert record.risk_state == {
        **dict.fromkeys(confirm, "confirmedCompromised"),
        **dict.fromkeys(dismiss, "dismissed"),
    }
    assert record.statuses[204] == 2
    assert record.requests == 2


def test_60_ids_are_accepted_61_are_refused(http: httpx.Client, shared: RunningSimulator) -> None:
    assert MAX_IDS_PER_CALL == 60
    sixty, sixty_one = new_ids(60), new_ids(61)
    assert post_ids(http, sixty).status_code == 204
    error = assert_graph_error(post_ids(http, sixty_one), 400, "invalidRequest")
    assert "60" in error["message"]
    assert confirmed(shared, sixty) == sixty
    assert confirmed(shared, sixty_one) == []


@pytest.mark.parametrize(
    "bad",
    ["not-a-guid", "", "1234", 42, None, "00000000-0000-0000-0000-00000000000g"],
    ids=["word", "empty", "digits", "number", "null", "bad-hex"],
)
def test_a_malformed_id_refuses_the_whole_call(
    http: httpx.Client, shared: RunningSimulator, bad: Any
) -> None:
    good = new_ids(2)
    response = post_ids(http, [*good, bad])
    assert_graph_error(response, 400, "invalidRequest")
    assert confirmed(shared, good) == []


def test_configured_bad_ids_are_refused(simulator_factory: Any) -> None:
    bad = str(uuid.uuid4())
    server = simulator_factory(settings(bad_ids=[bad.upper()]))
    with client_for(server) as http:
        assert_graph_error(post_ids(http, [*new_ids(1), bad]), 400, "invalidRequest")
        assert post_ids(http, new_ids(1)).status_code == 204
    assert len(server.simulator.record.accepted["confirmCompromised"]) == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "BadRequest"),
        (b"[]", "invalidRequest"),
        (b'{"userIds": []}', "invalidRequest"),
        (b'{"userIds": "00000000-0000-4000-8000-000000000000"}', "invalidRequest"),
        (b'{"ids": ["00000000-0000-4000-8000-000000000000"]}', "invalidRequest"),
    ],
    ids=["not-json", "array", "empty-list", "string", "wrong-key"],
)
def test_a_malformed_body_is_bad_request(http: httpx.Client, body: bytes, code: str) -> None:
    response = http.post(
        CONFIRM, content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert_graph_error(response, 400, code)


def test_client_request_id_is_echoed(http: httpx.Client) -> None:
    ok = post_ids(http, new_ids(1), **{"client-request-id": "crid-ok"})
    assert ok.headers["client-request-id"] == "crid-ok"
    refused = post_ids(http, ["nope"], **{"client-request-id": "crid-bad"})
    error = assert_graph_error(refused, 400, "invalidRequest")
    assert refused.headers["client-request-id"] == "crid-bad"
    assert error["innerError"]["client-request-id"] == "crid-bad"


def test_each_answer_has_its_own_request_id(http: httpx.Client) -> None:
    seen = {post_ids(http, new_ids(1)).headers["request-id"] for _ in range(3)}
    assert len(seen) == 3


# -- throttling and faults -----------------------------------------------------------------------
def test_the_tenant_budget_answers_429_without_retry_after(simulator_factory: Any) -> None:
    server = simulator_factory(settings(rate_per_second=0.01, burst=1))
    first, second = new_ids(1), new_ids(1)
    with client_for(server) as http:
        assert post_ids(http, first).status_code == 204
        response = post_ids(http, second)
    error = assert_graph_error(response, 429, "TooManyRequests")
    assert "retry-after" not in response.headers
    assert set(error["innerError"]) >= {"request-id", "date"}
    assert server.simulator.record.accepted["confirmCompromised"] == first
    assert server.simulator.record.statuses == {204: 1, 429: 1}


def test_the_burst_allows_that_many_requests_at_once(simulator_factory: Any) -> None:
    server = simulator_factory(settings(rate_per_second=0.01, burst=3))
    with client_for(server) as http:
        statuses = [post_ids(http, new_ids(1)).status_code for _ in range(4)]
    assert statuses == [204, 204, 204, 429]


def test_refused_sign_ins_do_not_spend_the_budget(simulator_factory: Any) -> None:
    server = simulator_factory(settings(rate_per_second=0.01, burst=1))
    with client_for(server) as http:
        wrong = http.post(CONFIRM, json={"userIds": new_ids(1)}, headers={"Authorization": "x"})
        assert wrong.status_code == 401
        assert post_ids(http, new_ids(1)).status_code == 204


def test_a_429_fault_has_no_retry_after_either(simulator_factory: Any) -> None:
    server = simulator_factory(settings(faults={"429": 1.0}, retry_after_seconds=5.0))
    with client_for(server) as http:
        response = post_ids(http, new_ids(1))
    assert_graph_error(response, 429, "TooManyRequests")
    assert "retry-after" not in response.headers
    assert server.simulator.record.faults["429"] == 1


def test_a_503_carries_retry_after_when_configured(simulator_factory: Any) -> None:
    server = simulator_factory(settings(faults={"503": 1.0}, retry_after_seconds=2.5))
    with client_for(server) as http:
        response = post_ids(http, new_ids(1))
    assert_graph_error(response, 503, "serviceNotAvailable")
    assert response.headers["retry-after"] == "2.5"


def test_a_503_has_no_retry_after_unless_configured(simulator_factory: Any) -> None:
    server = simulator_factory(settings(faults={"503": 1.0}))
    with client_for(server) as http:
        response = post_ids(http, new_ids(1))
    assert_graph_error(response, 503, "serviceNotAvailable")
    assert "retry-after" not in response.headers


@pytest.mark.parametrize("fault", ["reset", "lost"])
def test_reset_and_lost_break_the_connection_instead_of_answering(
    simulator_factory: Any, fault: str
) -> None:
    server = simulator_factory(settings(faults={fault: 1.0}))
    ids = new_ids(2)
    with client_for(server) as http, pytest.raises(httpx.TransportError):
        post_ids(http, ids)
    record = server.simulator.record
    assert record.faults[fault] == 1
    assert record.accepted["confirmCompromised"] == (ids if fault == "lost" else [])
    assert record.statuses[204] == 0
    assert record.requests == 1


def test_faults_are_drawn_with_their_probabilities(simulator_factory: Any) -> None:
    server = simulator_factory(
        settings(faults={"500": 0.5}, seed=7, rate_per_second=1e6, burst=100)
    )
    with client_for(server) as http:
        statuses = [post_ids(http, new_ids(1)).status_code for _ in range(40)]
    assert set(statuses) == {204, 500}
    assert 8 <= statuses.count(500) <= 32


# -- record and paths ----------------------------------------------------------------------------
def test_the_record_endpoint_reports_what_happened(simulator_factory: Any) -> None:
    server = simulator_factory(settings(rate_per_second=0.01, burst=2))
    ids = new_ids(2)
    with client_for(server) as http:
        assert post_ids(http, ids).status_code == 204
        assert post_ids(http, ["bad"]).status_code == 400
        assert post_ids(http, new_ids(1)).status_code == 429
        response = http.get("/_simulator/record")
    assert response.status_code == 200
    record = response.json()
    assert record["accepted"] == {"confirmCompromised": ids, "dismiss": []}
    assert record["risk_state"] == dict.fromkeys(ids, "confirmedCompromised")
    assert record["statuses"] == {"204": 1, "400": 1, "429": 1}
    assert record["faults"] == {}
    assert record["requests"] == 3


@pytest.mark.parametrize(
    "path",
    [
        "/beta/identityProtection/riskyUsers/confirmCompromised",
        "/beta/riskyUsers/confirmCompromised",
    ],
)
def test_beta_paths_work(http: httpx.Client, shared: RunningSimulator, path: str) -> None:
    ids = new_ids(2)
    assert post_ids(http, ids, path=path).status_code == 204
    assert confirmed(shared, ids) == ids


@pytest.mark.parametrize(
    "path",
    [
        "/v2.0/identityProtection/riskyUsers/confirmCompromised",
        "/v1.0/identityProtection/riskyUsers/compromise",
        "/beta/riskyUsers/confirmcompromised",
    ],
)
def test_unknown_versions_and_actions_are_not_found(http: httpx.Client, path: str) -> None:
    assert_graph_error(post_ids(http, new_ids(1), path=path), 404, "Request_ResourceNotFound")
