"""The in-process transport: the app's real answers, and a socket's failures for faults."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from batcher.simulator import GraphSimulator
from tests.conftest import TEST_TOKEN
from tests.test_simulator import AUTH, CONFIRM, new_ids, settings


def simulator(**changes: Any) -> GraphSimulator:
    return GraphSimulator(settings(**changes), tokens={TEST_TOKEN})


def send(
    sim: GraphSimulator,
    method: str,
    url: str,
    *,
    timeout: float | None = None,
    client_timeout: float | None = 10.0,
    **kwargs: Any,
) -> httpx.Response:
    """One request through ``sim.transport(timeout)``, as batcher's code would send it."""

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=sim.transport(timeout),
            base_url="http://graph.local",
            headers=AUTH,
            timeout=client_timeout,
        ) as client:
            return await client.request(method, url, **kwargs)

    return anyio.run(main)


def test_the_transport_gives_the_apps_real_answers() -> None:
    sim = simulator()
    ids = new_ids(2)
    confirmed = send(sim, "POST", CONFIRM, json={"userIds": ids})
    assert (confirmed.status_code, confirmed.content) == (204, b"")
    assert sim.record.accepted["confirmCompromised"] == ids
    looked_up = send(sim, "GET", "/v1.0/users/ann@contoso.com")
    assert looked_up.json()["userPrincipalName"] == "ann@contoso.com"
    refused = send(sim, "GET", "/v1.0/users/ann@contoso.com", headers={"Authorization": "x"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_a_reset_is_a_read_error_and_applies_nothing() -> None:
    sim = simulator(faults={"reset": 1.0})
    with pytest.raises(httpx.ReadError):
        send(sim, "POST", CONFIRM, json={"userIds": new_ids(1)})
    assert sim.record.faults == {"reset": 1}
    assert sim.record.accepted["confirmCompromised"] == []


def test_a_lost_answer_is_a_read_error_after_the_request_applied() -> None:
    sim = simulator(faults={"lost": 1.0})
    ids = new_ids(3)
    with pytest.raises(httpx.ReadError):
        send(sim, "POST", CONFIRM, json={"userIds": ids})
    uid = ids[0]
    batch = {
        "requests": [
            {
                "id": "1",
                "method": "PATCH",
                "url": f"/users/{uid}",
                "headers": {"Content-Type": "application/json"},
                "body": {"accountEnabled": False},
            }
        ]
    }
    with pytest.raises(httpx.ReadError):
        send(sim, "POST", "/v1.0/$batch", json=batch)
    assert sim.record.accepted["confirmCompromised"] == ids
    assert sim.record.succeeded("disable") == [uid]
    assert sim.record.faults == {"lost": 2}


def test_a_hang_longer_than_the_timeout_is_a_read_timeout() -> None:
    sim = simulator(faults={"hang": 1.0}, hang_seconds=600)
    with pytest.raises(httpx.ReadTimeout):
        send(sim, "POST", CONFIRM, timeout=0.2, json={"userIds": new_ids(1)})
    assert sim.record.faults == {"hang": 1}


def test_without_a_timeout_the_clients_read_timeout_applies() -> None:
    sim = simulator(faults={"hang": 1.0}, hang_seconds=600)
    with pytest.raises(httpx.ReadTimeout):
        send(sim, "POST", CONFIRM, client_timeout=0.2, json={"userIds": new_ids(1)})


def test_a_hang_shorter_than_the_timeout_answers_504() -> None:
    sim = simulator(faults={"hang": 1.0}, hang_seconds=0.01)
    response = send(sim, "POST", CONFIRM, timeout=5, json={"userIds": new_ids(1)})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "GatewayTimeout"


def test_concurrent_requests_share_one_simulator() -> None:
    sim = simulator(rate_per_second=1e6, burst=100)
    ids = new_ids(20)
    statuses: list[int] = []

    async def main() -> None:
        transport = sim.transport()
        async with httpx.AsyncClient(
            transport=transport, base_url="http://graph.local", headers=AUTH
        ) as client:

            async def one(uid: str) -> None:
                response = await client.post(CONFIRM, json={"userIds": [uid]})
                statuses.append(response.status_code)

            async with anyio.create_task_group() as group:
                for uid in ids:
                    group.start_soon(one, uid)

    anyio.run(main)
    assert statuses == [204] * 20
    assert sorted(sim.record.accepted["confirmCompromised"]) == sorted(ids)
