"""Containment over HTTP: block sign-in (PATCH accountEnabled) and revoke sign-in sessions."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from batcher.simulator import DirectoryUser, GraphSimulator, RunningSimulator
from tests.conftest import TEST_TOKEN
from tests.test_simulator import AUTH, InProcess, assert_graph_error, settings

ADMIN = DirectoryUser(userPrincipalName="admin@contoso.com", privileged=True)
MEMBER = DirectoryUser(userPrincipalName="mia@contoso.com")
GUEST = DirectoryUser(userPrincipalName="gus_fabrikam.com#EXT#@contoso.com", userType="Guest")
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def tenant(**changes: object) -> InProcess:
    """A closed directory with an administrator, a member and a guest (fresh copies)."""
    users = [DirectoryUser(**vars(u)) for u in (ADMIN, MEMBER, GUEST)]
    sim = GraphSimulator(settings(**changes), tokens={TEST_TOKEN}, clock=lambda: NOW, users=users)
    return InProcess(sim)


def user(graph: InProcess, template: DirectoryUser) -> DirectoryUser:
    found = graph.sim.directory.get(template.id)
    assert found is not None
    return found


def disable(graph: InProcess, key: str, enabled: bool = False) -> httpx.Response:
    return graph.patch(f"/v1.0/users/{key}", json={"accountEnabled": enabled})


def revoke(graph: InProcess, key: str) -> httpx.Response:
    return graph.post(f"/v1.0/users/{key}/revokeSignInSessions")


# -- block sign-in -------------------------------------------------------------------------------
def test_disable_and_enable_answer_204_and_flip_account_enabled() -> None:
    graph = tenant()
    response = disable(graph, MEMBER.id)
    assert (response.status_code, response.content) == (204, b"")
    uuid.UUID(response.headers["request-id"])
    assert user(graph, MEMBER).accountEnabled is False
    assert disable(graph, "mia@contoso.com", enabled=True).status_code == 204
    assert user(graph, MEMBER).accountEnabled is True
    assert graph.sim.record.operations(MEMBER.id) == ["disable", "enable"]


def test_a_patch_of_its_own_takes_graphs_latency() -> None:
    graph = tenant(latency_min_seconds=0.05, latency_max_seconds=0.05)
    started = time.monotonic()
    assert disable(graph, MEMBER.id).status_code == 204
    assert time.monotonic() - started >= 0.05  # as a $batch does, and a plain script meets


def test_disabling_an_administrator_needs_a_privileged_caller() -> None:
    graph = tenant()
    error = assert_graph_error(disable(graph, ADMIN.id), 403, "Authorization_RequestDenied")
    assert error["message"] == "Insufficient privileges to complete the operation."
    assert user(graph, ADMIN).accountEnabled is True
    assert [(w.op, w.user_id, w.status) for w in graph.sim.record.writes] == [
        ("disable", ADMIN.id, 403)
    ]

    privileged = tenant(caller_privileged=True)
    assert disable(privileged, ADMIN.id).status_code == 204
    assert user(privileged, ADMIN).accountEnabled is False


def test_writes_to_a_user_the_directory_lacks_are_404() -> None:
    graph = tenant()
    absent = str(uuid.uuid4())
    assert_graph_error(disable(graph, absent), 404, "Request_ResourceNotFound")
    assert_graph_error(revoke(graph, "nobody@contoso.com"), 404, "Request_ResourceNotFound")
    assert [(w.op, w.user_id, w.status) for w in graph.sim.record.writes] == [
        ("disable", absent, 404),
        ("revoke", "nobody@contoso.com", 404),
    ]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "BadRequest"),
        (b'{"accountEnabled": "false"}', "Request_BadRequest"),
        (b"{}", "Request_BadRequest"),
        (b'{"accountEnabled": false, "displayName": "x"}', "Request_BadRequest"),
    ],
    ids=["not-json", "string", "missing", "other-property"],
)
def test_patch_changes_account_enabled_only(body: bytes, code: str) -> None:
    graph = tenant()
    response = graph.patch(
        f"/v1.0/users/{MEMBER.id}", content=body, headers={"Content-Type": "application/json"}
    )
    assert_graph_error(response, 400, code)
    assert user(graph, MEMBER).accountEnabled is True


# -- revoke sessions -----------------------------------------------------------------------------
def test_revoke_answers_200_value_true_and_resets_the_sessions() -> None:
    graph = tenant()
    response = revoke(graph, MEMBER.id)
    assert response.status_code == 200
    body = response.json()
    assert body["value"] is True
    assert body["@odata.context"].endswith("/v1.0/$metadata#Edm.Boolean")
    assert user(graph, MEMBER).signInSessionsValidFromDateTime == "2023-11-14T22:13:20Z"
    shown = graph.get(f"/v1.0/users/{MEMBER.id}?$select=signInSessionsValidFromDateTime")
    assert shown.json()["signInSessionsValidFromDateTime"] == "2023-11-14T22:13:20Z"


def test_revoke_answers_204_when_configured() -> None:
    graph = tenant(revoke_answers_204=True)
    response = graph.post("/beta/users('mia@contoso.com')/revokeSignInSessions")
    assert (response.status_code, response.content) == (204, b"")
    assert user(graph, MEMBER).signInSessionsValidFromDateTime == "2023-11-14T22:13:20Z"


def test_revoking_a_guest_answers_but_changes_nothing_and_is_recorded() -> None:
    graph = tenant()
    response = revoke(graph, GUEST.id)
    assert response.status_code == 200 and response.json()["value"] is True
    assert user(graph, GUEST).signInSessionsValidFromDateTime is None
    assert graph.sim.record.revoked_guests == [GUEST.id]
    revoke(graph, MEMBER.id)
    assert graph.sim.record.revoked_guests == [GUEST.id]  # members are not listed


def test_the_record_keeps_each_users_operations_in_order() -> None:
    graph = tenant()
    disable(graph, MEMBER.id)
    revoke(graph, ADMIN.id)
    revoke(graph, MEMBER.id)
    disable(graph, ADMIN.id)  # refused: not in the log
    record = graph.sim.record
    assert record.operations(MEMBER.id) == ["disable", "revoke"]
    assert record.operations(ADMIN.id) == ["revoke"]
    disabled, revoked = (w for w in record.writes if w.user_id == MEMBER.id)
    assert disabled.at <= revoked.at
    assert record.succeeded("revoke") == [ADMIN.id, MEMBER.id]


# -- permissions ---------------------------------------------------------------------------------
def test_denied_reads_answer_403_and_writes_still_work() -> None:
    graph = tenant(directory_read_denied=True)
    for path in (f"/v1.0/users/{MEMBER.id}", "/v1.0/users?$filter=mail eq 'mia@contoso.com'"):
        assert_graph_error(graph.get(path), 403, "Authorization_RequestDenied")
    assert disable(graph, MEMBER.id).status_code == 204


def test_denied_writes_answer_403_and_reads_still_work() -> None:
    graph = tenant(directory_write_denied=True)
    assert_graph_error(disable(graph, MEMBER.id), 403, "Authorization_RequestDenied")
    assert_graph_error(revoke(graph, MEMBER.id), 403, "Authorization_RequestDenied")
    assert user(graph, MEMBER).accountEnabled is True
    assert user(graph, MEMBER).signInSessionsValidFromDateTime is None
    assert graph.get(f"/v1.0/users/{MEMBER.id}").status_code == 200


def test_directory_endpoints_need_a_known_bearer_token() -> None:
    graph = tenant()
    wrong = {"Authorization": "Bearer made-up"}
    assert_graph_error(
        graph.get(f"/v1.0/users/{MEMBER.id}", headers=wrong), 401, "InvalidAuthenticationToken"
    )
    response = graph.patch(
        f"/v1.0/users/{MEMBER.id}", json={"accountEnabled": False}, headers=wrong
    )
    assert_graph_error(response, 401, "InvalidAuthenticationToken")
    assert user(graph, MEMBER).accountEnabled is True


# -- waiting for writes --------------------------------------------------------------------------
def test_wait_for_writes_returns_once_that_many_succeeded() -> None:
    sim = GraphSimulator(settings(), tokens={TEST_TOKEN})
    ids = [str(uuid.uuid4()) for _ in range(3)]
    with RunningSimulator(sim) as server:

        def send() -> None:
            with httpx.Client(base_url=server.url, headers=AUTH) as http:
                for uid in ids:
                    http.patch(f"/v1.0/users/{uid}", json={"accountEnabled": False})

        sender = threading.Thread(target=send)
        sender.start()
        assert sim.record.wait_for_writes("disable", 3, timeout=10)
        sender.join()
    assert sim.record.succeeded("disable") == ids
    assert not sim.record.wait_for_writes("revoke", 1, timeout=0.01)
