"""$batch, the directory's budgets and faults, over HTTP: each inner request on its own."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from batcher.simulator import MAX_REQUESTS_PER_BATCH, DirectoryUser
from batcher.simulator.budget import TokenBucket
from tests.test_simulator import (
    AUTH,
    CONFIRM,
    assert_graph_error,
    client_for,
    in_process,
    new_ids,
    settings,
)

JSON = {"Content-Type": "application/json"}


def get(rid: str, url: str, **headers: str) -> dict[str, Any]:
    return {"id": rid, "method": "GET", "url": url, "headers": headers}


def disable(rid: str, user_id: str) -> dict[str, Any]:
    return {
        "id": rid,
        "method": "PATCH",
        "url": f"/users/{user_id}",
        "headers": JSON,
        "body": {"accountEnabled": False},
    }


def answers(response: httpx.Response) -> dict[str, dict[str, Any]]:
    """The inner answers by request id (they come in any order)."""
    assert response.status_code == 200, response.text
    return {a["id"]: a for a in response.json()["responses"]}


def assert_inner_error(answer: dict[str, Any], status: int, code: str) -> None:
    assert answer["status"] == status, answer
    error = answer["body"]["error"]
    assert error["code"] == code
    assert error["innerError"]["request-id"] == answer["headers"]["request-id"]


def test_20_requests_are_answered_21_refuse_the_whole_batch() -> None:
    graph = in_process()
    assert MAX_REQUESTS_PER_BATCH == 20
    twenty = [get(str(i), f"/users/u{i}@contoso.com") for i in range(20)]
    assert {a["status"] for a in answers(graph.batch(*twenty)).values()} == {200}
    response = graph.batch(*twenty, get("20", "/users/u20@contoso.com"))
    assert "20" in assert_graph_error(response, 400, "BadRequest")["message"]
    record = graph.sim.record
    assert (record.batches, record.inner_requests, record.directory_reads) == (2, 20, 20)
    assert record.statuses == {200: 1, 400: 1}


def test_each_inner_request_is_judged_on_its_own() -> None:
    graph = in_process(users=[DirectoryUser(userPrincipalName="ann@contoso.com")])
    ann = graph.sim.directory.peek("ann@contoso.com")
    assert ann is not None
    response = graph.batch(
        get("found", "users?$filter=mail eq 'x' or userPrincipalName eq 'ann@contoso.com'"),
        get("absent", "/users/bob@contoso.com"),
        get("bad-filter", "/users?$filter=mail eq 'unterminated"),
        disable("write", ann.id),
        get("unknown", "/groups"),
    )
    by_id = answers(response)
    assert by_id["found"]["status"] == 200
    assert [u["id"] for u in by_id["found"]["body"]["value"]] == [ann.id]
    assert by_id["found"]["headers"]["Content-Type"].startswith("application/json")
    assert_inner_error(by_id["absent"], 404, "Request_ResourceNotFound")
    assert_inner_error(by_id["bad-filter"], 400, "BadRequest")
    assert (by_id["write"]["status"], by_id["write"]["body"]) == (204, None)
    assert_inner_error(by_id["unknown"], 404, "Request_ResourceNotFound")
    assert ann.accountEnabled is False
    record = graph.sim.record
    assert record.inner_statuses == {200: 1, 404: 2, 400: 1, 204: 1}
    assert record.statuses == {200: 1}  # the client saw one answer: the batch's
    assert record.filters == [
        "mail eq 'x' or userPrincipalName eq 'ann@contoso.com'",
        "mail eq 'unterminated",
    ]


def test_an_administrator_in_a_batch_is_refused_alone() -> None:
    admin = DirectoryUser(userPrincipalName="admin@contoso.com", privileged=True)
    member = DirectoryUser(userPrincipalName="mia@contoso.com")
    graph = in_process(users=[admin, member])
    by_id = answers(graph.batch(disable("admin", admin.id), disable("member", member.id)))
    assert_inner_error(by_id["admin"], 403, "Authorization_RequestDenied")
    assert by_id["member"]["status"] == 204
    assert (admin.accountEnabled, member.accountEnabled) == (True, False)


def test_an_inner_request_with_a_body_needs_a_content_type() -> None:
    graph = in_process()
    uid = str(uuid.uuid4())
    bare = {**disable("bare", uid), "headers": {}}
    by_id = answers(graph.batch(bare, {**disable("typed", uid), "id": "typed"}))
    assert_inner_error(by_id["bare"], 400, "BadRequest")
    assert "Content-Type" in by_id["bare"]["body"]["error"]["message"]
    assert by_id["typed"]["status"] == 204
    assert graph.sim.record.succeeded("disable") == [uid]  # once: the typed one


def test_answers_come_in_the_seeded_randoms_order() -> None:
    sent = [get(str(i), f"/users/u{i}@contoso.com") for i in range(20)]
    orders = []
    for seed in (7, 7, 8):
        graph = in_process(seed=seed)
        orders.append([a["id"] for a in graph.batch(*sent).json()["responses"]])
    assert orders[0] == orders[1] != orders[2]
    assert orders[0] != [r["id"] for r in sent]
    assert sorted(orders[0]) == sorted(r["id"] for r in sent)


def test_inner_requests_carry_their_own_headers_and_the_batchs_token() -> None:
    graph = in_process(users=[DirectoryUser(userPrincipalName="ann@contoso.com")])
    advanced = "/users?$filter=onPremisesSamAccountName eq 'x'&$count=true"
    by_id = answers(
        graph.batch(
            get("plain", advanced),
            get("eventual", advanced, ConsistencyLevel="eventual", **{"client-request-id": "c1"}),
        )
    )
    assert_inner_error(by_id["plain"], 400, "Request_BadRequest")  # $count needs the header
    assert by_id["eventual"]["status"] == 200
    assert by_id["eventual"]["body"]["@odata.count"] == 0
    assert by_id["eventual"]["headers"]["client-request-id"] == "c1"


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[]",
        b'{"requests": []}',
        b'{"requests": [{"id": "1", "url": "/users"}]}',
        b'{"requests": [{"id": "1", "method": "GET", "url": "/me"},'
        b' {"id": "1", "method": "GET", "url": "/me"}]}',
    ],
    ids=["not-json", "array", "empty", "no-method", "duplicate-id"],
)
def test_a_malformed_batch_is_refused_whole(payload: bytes) -> None:
    graph = in_process()
    response = graph.post("/v1.0/$batch", content=payload, headers=JSON)
    assert_graph_error(response, 400, "BadRequest")
    assert graph.sim.record.inner_requests == 0


def test_a_batch_needs_a_bearer_token_and_cannot_nest() -> None:
    graph = in_process()
    unsigned = graph.post(
        "/beta/$batch",
        json={"requests": [get("1", "/users/a@contoso.com")]},
        headers={"Authorization": "Bearer made-up"},
    )
    assert_graph_error(unsigned, 401, "InvalidAuthenticationToken")
    nested = {"id": "n", "method": "POST", "url": "/$batch", "headers": JSON, "body": {}}
    assert_inner_error(answers(graph.batch(nested, version="beta"))["n"], 400, "BadRequest")
    assert graph.sim.record.directory_reads == 0


def test_an_inner_identity_protection_action_spends_its_own_budget() -> None:
    graph = in_process(rate_per_second=0.01, burst=1)
    ids = new_ids(2)
    confirm = CONFIRM.removeprefix("/v1.0")
    by_id = answers(
        graph.batch(
            *(
                {
                    "id": uid,
                    "method": "POST",
                    "url": confirm,
                    "headers": JSON,
                    "body": {"userIds": [uid]},
                }
                for uid in ids
            )
        )
    )
    assert sorted(a["status"] for a in by_id.values()) == [204, 429]
    assert graph.sim.record.accepted["confirmCompromised"] == [
        uid for uid in ids if by_id[uid]["status"] == 204
    ]


# -- budgets -------------------------------------------------------------------------------------
def test_inner_requests_over_the_read_budget_get_429_with_retry_after() -> None:
    graph = in_process(directory_reads_per_second=0.01, directory_reads_burst=2)
    by_id = answers(graph.batch(*(get(str(i), f"/users/u{i}@contoso.com") for i in range(3))))
    refused = [a for a in by_id.values() if a["status"] == 429]
    assert len(refused) == 1
    assert_inner_error(refused[0], 429, "TooManyRequests")
    assert refused[0]["headers"]["Retry-After"] == "100"  # a token every 100 s
    assert graph.sim.record.inner_statuses == {200: 2, 429: 1}


def test_inner_writes_over_the_write_budget_get_429_with_retry_after() -> None:
    graph = in_process(directory_writes_per_second=0.5, directory_writes_burst=1)
    ids = new_ids(2)
    by_id = answers(graph.batch(*(disable(uid, uid) for uid in ids)))
    assert sorted(a["status"] for a in by_id.values()) == [204, 429]
    refused = next(a for a in by_id.values() if a["status"] == 429)
    assert refused["headers"]["Retry-After"] == "2"
    assert [w.status for w in graph.sim.record.writes if w.user_id == refused["id"]] == [429]


def test_a_sped_up_write_budget_says_retry_after_in_fractional_seconds() -> None:
    graph = in_process(
        directory_writes_per_second=1, directory_writes_burst=1, retry_after_least_seconds=0.01
    )
    ids = new_ids(2)
    by_id = answers(graph.batch(*(disable(uid, uid) for uid in ids)))
    refused = next(a for a in by_id.values() if a["status"] == 429)
    # the next token comes within 1 s (less what the batch took): said in fractional seconds,
    # where Graph's whole seconds would say "1" (the bucket's own test pins the figures)
    said = refused["headers"]["Retry-After"]
    assert "." in said and 0.0 < float(said) <= 1.0


def test_token_bucket_retry_after_is_whole_seconds_unless_its_least_is_under_one() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2000, burst=1, clock=lambda: now[0])
    assert bucket.take() and not bucket.take()
    assert bucket.retry_after() == "1"  # Graph's: whole seconds, at least 1
    assert bucket.retry_after(0.0001) == "0.000500"  # the token's own wait, 1/2000 s
    assert bucket.retry_after(0.01) == "0.010000"
    slow = TokenBucket(rate=0.25, burst=1, clock=lambda: now[0])
    assert slow.take() and slow.retry_after() == "4" and slow.retry_after(0.01) == "4.000000"


def test_direct_directory_requests_spend_the_same_budget() -> None:
    graph = in_process(directory_reads_per_second=0.5, directory_reads_burst=1)
    assert graph.get("/v1.0/users/a@contoso.com").status_code == 200
    response = graph.get("/v1.0/users/b@contoso.com")
    assert_graph_error(response, 429, "TooManyRequests")
    assert response.headers["retry-after"] == "2"
    assert_inner_error(
        answers(graph.batch(get("1", "/users/c@contoso.com")))["1"], 429, "TooManyRequests"
    )


def test_directory_budgets_and_identity_protections_are_independent() -> None:
    graph = in_process(
        rate_per_second=0.01,
        burst=1,
        directory_reads_per_second=0.01,
        directory_reads_burst=1,
        directory_writes_per_second=0.01,
        directory_writes_burst=1,
    )
    uid = str(uuid.uuid4())
    assert graph.post(CONFIRM, json={"userIds": [uid]}).status_code == 204
    assert graph.get(f"/v1.0/users/{uid}").status_code == 200  # reads untouched by the action
    assert graph.patch(f"/v1.0/users/{uid}", json={"accountEnabled": False}).status_code == 204
    assert graph.get(f"/v1.0/users/{uid}").status_code == 429
    assert graph.post(f"/v1.0/users/{uid}/revokeSignInSessions").status_code == 429
    assert graph.post(CONFIRM, json={"userIds": [uid]}).status_code == 429
    assert "retry-after" not in graph.post(CONFIRM, json={"userIds": [uid]}).headers

    fresh = in_process(
        rate_per_second=0.01, burst=1, directory_reads_per_second=0.01, directory_reads_burst=1
    )
    assert [fresh.get(f"/v1.0/users/{uid}").status_code for _ in range(2)] == [200, 429]
    assert fresh.post(CONFIRM, json={"userIds": [uid]}).status_code == 204  # reads spent none


# -- faults --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "retry_after", "shown"),
    [
        ("429", None, "1"),
        ("429", 2.5, "3"),
        ("503", 2.5, "2.5"),
        ("503", None, None),
        ("500", 9.0, None),
    ],
)
def test_directory_faults_answer_each_inner_request(
    kind: str, retry_after: float | None, shown: str | None
) -> None:
    graph = in_process(directory_faults={kind: 1.0}, retry_after_seconds=retry_after)
    uid = str(uuid.uuid4())
    by_id = answers(graph.batch(get("read", f"/users/{uid}"), disable("write", uid)))
    codes = {"429": "TooManyRequests", "500": "generalException", "503": "serviceNotAvailable"}
    for answer in by_id.values():
        assert_inner_error(answer, int(kind), codes[kind])
        assert answer["headers"].get("Retry-After") == shown
    record = graph.sim.record
    assert record.directory_faults == {kind: 2}
    assert record.faults == {}
    assert record.succeeded("disable") == []
    direct = graph.get(f"/v1.0/users/{uid}")
    assert_graph_error(direct, int(kind), codes[kind])
    assert direct.headers.get("retry-after") == shown


def test_a_directory_fault_429_says_fractional_seconds_where_its_least_is_under_one() -> None:
    graph = in_process(directory_faults={"429": 1.0}, retry_after_least_seconds=0.05)
    by_id = answers(graph.batch(disable("write", str(uuid.uuid4()))))
    assert by_id["write"]["status"] == 429
    assert by_id["write"]["headers"]["Retry-After"] == "0.05"  # Graph's would be "1"
    slower = in_process(
        directory_faults={"429": 1.0}, retry_after_least_seconds=0.05, retry_after_seconds=0.2
    )
    by_id = answers(slower.batch(disable("write", str(uuid.uuid4()))))
    assert by_id["write"]["headers"]["Retry-After"] == "0.2"


def test_directory_faults_are_drawn_with_their_probability() -> None:
    graph = in_process(directory_faults={"504": 0.5}, seed=3)
    statuses = [
        a["status"]
        for a in answers(
            graph.batch(*(get(str(i), f"/users/u{i}@x.com") for i in range(20)))
        ).values()
    ]
    assert set(statuses) == {200, 504}
    assert 3 <= statuses.count(504) <= 17


def test_identity_protection_faults_hit_the_batch_call_not_its_requests() -> None:
    graph = in_process(faults={"503": 1.0}, retry_after_seconds=4)
    response = graph.batch(get("1", "/users/a@contoso.com"))
    assert_graph_error(response, 503, "serviceNotAvailable")
    assert response.headers["retry-after"] == "4"
    record = graph.sim.record
    assert (record.faults, record.inner_requests, record.directory_reads) == ({"503": 1}, 0, 0)


@pytest.mark.parametrize("fault", ["reset", "lost"])
def test_a_lost_batch_applies_its_requests_a_reset_one_does_not(
    simulator_factory: Any, fault: str
) -> None:
    server = simulator_factory(settings(faults={fault: 1.0}))
    ids = new_ids(3)
    with client_for(server) as http, pytest.raises(httpx.TransportError):
        http.post("/v1.0/$batch", json={"requests": [disable(u, u) for u in ids]}, headers=AUTH)
    record = server.simulator.record
    assert record.faults == {fault: 1}
    assert record.succeeded("disable") == (ids if fault == "lost" else [])
    assert record.inner_requests == (3 if fault == "lost" else 0)
    assert record.requests == 1


# -- the record ----------------------------------------------------------------------------------
def test_the_record_endpoint_shows_the_directory_traffic(simulator_factory: Any) -> None:
    server = simulator_factory(settings(seed=1))
    guest = "gus_fabrikam.com%23EXT%23@contoso.com"
    uid = str(uuid.uuid4())
    with client_for(server) as http:
        http.post(
            "/v1.0/$batch",
            json={
                "requests": [
                    disable("1", uid),
                    get("2", f"/users/{uid}"),
                    get("3", "/users/nobody"),
                ]
            },
            headers=AUTH,
        )
        http.post(f"/v1.0/users/{guest}/revokeSignInSessions", headers=AUTH)
        http.get("/v1.0/users?$filter=mail eq 'a@contoso.com'", headers=AUTH)
        record = http.get("/_simulator/record").json()
    guest_id = server.simulator.directory.peek("gus_fabrikam.com#ext#@contoso.com").id
    assert record["batches"] == 1
    assert record["inner_requests"] == 3
    assert record["inner_statuses"] == {"204": 1, "200": 1, "404": 1}
    assert record["statuses"] == {"200": 3}
    assert record["requests"] == 3
    assert record["directory_reads"] == 3
    assert record["filters"] == ["mail eq 'a@contoso.com'"]
    assert [(w["op"], w["user_id"], w["status"]) for w in record["writes"]] == [
        ("disable", uid, 204),
        ("revoke", guest_id, 200),
    ]
    assert all(isinstance(w["at"], float) for w in record["writes"])
    assert record["revoked_guests"] == [guest_id]
    assert record["directory_faults"] == {}
