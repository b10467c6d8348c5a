"""The simulated directory over HTTP: $filter grammar, $select, look-ups, open and closed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from batcher.errors import ConfigError
from batcher.simulator import DirectoryUser, GraphSimulator
from batcher.simulator.directory import NAMESPACE
from tests.test_simulator import InProcess, assert_graph_error, in_process, settings

USERS = "/v1.0/users"
SID = "S-1-5-21-1004336348-1177238915-682003330-1105"
ANN = DirectoryUser(
    id="6a1f3c2e-0b4d-4e5f-8a9b-1c2d3e4f5a6b",
    userPrincipalName="Ann.Lee@contoso.com",
    mail="ann.lee@contoso.com",
    proxyAddresses=["SMTP:ann.lee@contoso.com", "smtp:ann@contoso.com"],
    onPremisesSecurityIdentifier=SID,
    onPremisesSamAccountName="alee",
    onPremisesImmutableId="Zm9vYmFy",
    displayName="Ann Lee",
)
BOB = DirectoryUser(userPrincipalName="bob@contoso.com", mail="bob@contoso.com")
GUEST_UPN = "eve_fabrikam.com#EXT#@contoso.onmicrosoft.com"


def closed() -> InProcess:
    """A closed directory holding Ann and Bob (fresh copies: tests change users)."""
    users = [
        DirectoryUser(**{**vars(u), "proxyAddresses": list(u.proxyAddresses)}) for u in (ANN, BOB)
    ]
    return in_process(users=users)


def found(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [u["id"] for u in response.json()["value"]]


def derived(value: str) -> str:
    return str(uuid.uuid5(NAMESPACE, value))


# -- the $filter grammar -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("userPrincipalName", "ann.lee@contoso.com"),
        ("mail", "ann.lee@contoso.com"),
        ("onPremisesSecurityIdentifier", SID),
        ("onPremisesImmutableId", "Zm9vYmFy"),
        ("id", ANN.id),
    ],
)
def test_eq_on_each_lookup_property_finds_the_user(name: str, value: str) -> None:
    graph = closed()
    assert found(graph.get(USERS, params={"$filter": f"{name} eq '{value}'"})) == [ANN.id]


def test_in_finds_each_listed_user_and_skips_absent_ones() -> None:
    graph = closed()
    text = "mail in ('bob@contoso.com', 'nobody@contoso.com', 'ann.lee@contoso.com')"
    assert found(graph.get(USERS, params={"$filter": text})) == [BOB.id, ANN.id]


def test_proxy_addresses_match_through_any_ignoring_the_prefix_case() -> None:
    graph = closed()
    for value in ("smtp:ann@contoso.com", "SMTP:ANN@contoso.com", "smtp:ann.lee@contoso.com"):
        text = f"proxyAddresses/any(p:p eq '{value}')"
        assert found(graph.get(USERS, params={"$filter": text})) == [ANN.id]


def test_proxy_addresses_without_any_are_unsupported() -> None:
    graph = closed()
    response = graph.get(USERS, params={"$filter": "proxyAddresses eq 'smtp:ann@contoso.com'"})
    error = assert_graph_error(response, 400, "Request_UnsupportedQuery")
    assert "proxyAddresses" in error["message"]


def test_clauses_joined_by_or_with_parentheses_find_each_user_once() -> None:
    graph = closed()
    text = (
        "(userPrincipalName eq 'bob@contoso.com' or mail in ('ann.lee@contoso.com')) "
        "or proxyAddresses/any(x:x eq 'smtp:ann@contoso.com')"
    )
    assert found(graph.get(USERS, params={"$filter": text})) == [BOB.id, ANN.id]


def test_a_doubled_quote_is_one_quote_in_the_value() -> None:
    graph = in_process(users=[DirectoryUser(userPrincipalName="o'brien@contoso.com")])
    user = graph.sim.directory.peek("o'brien@contoso.com")
    assert user is not None
    text = "userPrincipalName eq 'o''brien@contoso.com'"
    assert found(graph.get(USERS, params={"$filter": text})) == [user.id]
    assert graph.sim.record.filters == [text]


def test_an_unencoded_hash_cuts_the_filter_and_is_refused() -> None:
    graph = in_process()
    response = graph.get(f"{USERS}?$filter=userPrincipalName eq '{GUEST_UPN}'")
    assert_graph_error(response, 400, "BadRequest")
    assert graph.sim.record.filters == ["userPrincipalName eq 'eve_fabrikam.com"]  # cut at '#'


def test_an_encoded_hash_finds_the_guest() -> None:
    graph = in_process()
    encoded = GUEST_UPN.replace("#", "%23")
    response = graph.get(f"{USERS}?$filter=userPrincipalName eq '{encoded}'&$select=userType")
    assert found(response) == [derived(GUEST_UPN.lower())]
    assert response.json()["value"][0]["userType"] == "Guest"
    assert graph.sim.record.filters == [f"userPrincipalName eq '{GUEST_UPN}'"]


def test_a_raw_plus_is_a_space_and_an_encoded_one_is_a_plus() -> None:
    graph = in_process()
    assert found(graph.get(f"{USERS}?$filter=mail eq 'ann+tag@contoso.com'")) == []
    encoded = graph.get(f"{USERS}?$filter=mail eq 'ann%2Btag@contoso.com'")
    assert found(encoded) == [derived("ann+tag@contoso.com")]
    assert graph.sim.record.filters == [
        "mail eq 'ann tag@contoso.com'",
        "mail eq 'ann+tag@contoso.com'",
    ]


def test_values_and_property_names_ignore_case() -> None:
    graph = closed()
    text = "USERPRINCIPALNAME eq 'ANN.LEE@CONTOSO.COM' or onPremisesSecurityIdentifier eq "
    text += f"'{SID.lower()}'"
    assert found(graph.get(USERS, params={"$filter": text})) == [ANN.id]


@pytest.mark.parametrize(
    "make",
    [
        lambda n: (
            "userPrincipalName in (" + ", ".join(f"'u{i}@contoso.com'" for i in range(n)) + ")"
        ),
        lambda n: " or ".join(f"mail eq 'u{i}@contoso.com'" for i in range(n)),
        lambda n: (
            f"id in ('{uuid.uuid4()}') or mail in ("
            + ", ".join(f"'u{i}@contoso.com'" for i in range(n - 1))
            + ")"
        ),
    ],
    ids=["in", "or", "mixed"],
)
def test_15_expressions_are_answered_16_are_refused(make: Any) -> None:
    graph = in_process()
    assert len(found(graph.get(USERS, params={"$filter": make(15)}))) == 15
    error = assert_graph_error(
        graph.get(USERS, params={"$filter": make(16)}), 400, "Request_UnsupportedQuery"
    )
    assert "Max allowed: 15" in error["message"]


def test_sam_account_name_needs_an_advanced_query() -> None:
    graph = closed()
    params = {"$filter": "onPremisesSamAccountName eq 'ALEE'"}
    plain = graph.get(USERS, params=params)
    assert (
        "onPremisesSamAccountName"
        in assert_graph_error(plain, 400, "Request_UnsupportedQuery")["message"]
    )
    advanced = graph.get(
        USERS, params={**params, "$count": "true"}, headers={"ConsistencyLevel": "eventual"}
    )
    assert found(advanced) == [ANN.id]
    assert advanced.json()["@odata.count"] == 1
    header_only = graph.get(USERS, params=params, headers={"ConsistencyLevel": "eventual"})
    assert_graph_error(header_only, 400, "Request_UnsupportedQuery")


def test_count_without_consistency_level_is_refused() -> None:
    graph = closed()
    response = graph.get(USERS, params={"$filter": "mail eq 'bob@contoso.com'", "$count": "true"})
    assert_graph_error(response, 400, "Request_BadRequest")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "BadRequest"),
        ("mail eq 'unterminated", "BadRequest"),
        ("mail eq bob@contoso.com", "BadRequest"),
        ("mail 'bob@contoso.com'", "BadRequest"),
        ("mail in ()", "BadRequest"),
        ("(mail eq 'bob@contoso.com'", "BadRequest"),
        ("mail eq 'a@contoso.com' and mail eq 'b@contoso.com'", "Request_UnsupportedQuery"),
        ("startswith(mail, 'bob')", "BadRequest"),
        ("mail ne 'bob@contoso.com'", "Request_UnsupportedQuery"),
        ("displayName eq 'Bob'", "Request_UnsupportedQuery"),
        ("id eq 'not-a-guid'", "Request_BadRequest"),
    ],
    ids=[
        "empty",
        "unterminated",
        "unquoted",
        "no-operator",
        "empty-in",
        "unclosed",
        "and",
        "function",
        "ne",
        "other-property",
        "bad-id",
    ],
)
def test_filters_graph_refuses_are_400(text: str, code: str) -> None:
    graph = in_process()
    assert_graph_error(graph.get(USERS, params={"$filter": text}), 400, code)
    assert graph.sim.record.filters == [text]


# -- $select -------------------------------------------------------------------------------------
def test_select_projects_the_asked_properties_and_always_the_id() -> None:
    graph = closed()
    response = graph.get(
        USERS,
        params={
            "$filter": "mail eq 'ann.lee@contoso.com'",
            "$select": "accountEnabled, userType,proxyaddresses",
        },
    )
    assert response.json()["value"] == [
        {
            "id": ANN.id,
            "accountEnabled": True,
            "userType": "Member",
            "proxyAddresses": ANN.proxyAddresses,
        }
    ]


def test_without_select_graphs_default_properties_come_back() -> None:
    graph = closed()
    user = graph.get(f"{USERS}/{BOB.id}").json()
    assert set(user) == {"@odata.context", "id", "displayName", "mail", "userPrincipalName"}


@pytest.mark.parametrize("name", ["privileged", "nonsense"])
def test_selecting_a_property_users_do_not_have_is_refused(name: str) -> None:
    graph = closed()
    error = assert_graph_error(
        graph.get(f"{USERS}/{ANN.id}", params={"$select": f"id,{name}"}), 400, "BadRequest"
    )
    assert f"'{name}'" in error["message"]


# -- GET /users/{key} ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        f"{USERS}/{ANN.id.upper()}",
        f"{USERS}/ann.lee@contoso.com",
        f"{USERS}/ANN.LEE%40contoso.com",
        f"{USERS}('ann.lee@contoso.com')",
        f"/beta/users/{ANN.id}",
    ],
    ids=["id", "upn", "encoded-upn", "parenthesised", "beta"],
)
def test_a_user_is_found_by_id_or_upn(path: str) -> None:
    response = closed().get(path)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == ANN.id
    assert response.json()["userPrincipalName"] == "Ann.Lee@contoso.com"


def test_a_upn_starting_with_dollar_is_found_in_parentheses_only() -> None:
    graph = in_process(users=[DirectoryUser(userPrincipalName="$svc@contoso.com")])
    assert graph.get(f"{USERS}('$svc@contoso.com')").json()["userPrincipalName"] == (
        "$svc@contoso.com"
    )
    assert_graph_error(graph.get(f"{USERS}/$svc@contoso.com"), 400, "BadRequest")


def test_a_guest_upn_is_found_with_its_hash_encoded() -> None:
    graph = in_process()
    response = graph.get(f"{USERS}/{GUEST_UPN.replace('#', '%23')}", params={"$select": "userType"})
    assert response.json()["userType"] == "Guest"


@pytest.mark.parametrize(
    "key", ["0f0e0d0c-0b0a-4908-8706-050403020100", "nobody@contoso.com", "not-an-id"]
)
def test_a_user_the_closed_directory_lacks_is_404(key: str) -> None:
    error = assert_graph_error(closed().get(f"{USERS}/{key}"), 404, "Request_ResourceNotFound")
    assert key in error["message"]


# -- open and closed directories -----------------------------------------------------------------
def test_the_open_directory_derives_stable_ids_in_every_simulator() -> None:
    first, second = in_process(), in_process()
    sid = "S-1-5-21-1-2-3-500"
    guid = str(uuid.uuid4())
    for graph in (first, second):
        by_upn = graph.get(f"{USERS}/Ann@Contoso.com").json()["id"]
        by_mail = found(graph.get(USERS, params={"$filter": "mail eq 'ann@contoso.com'"}))
        by_proxy = found(
            graph.get(
                USERS, params={"$filter": "proxyAddresses/any(p:p eq 'smtp:ANN@contoso.com')"}
            )
        )
        by_sid = found(
            graph.get(USERS, params={"$filter": f"onPremisesSecurityIdentifier eq '{sid.lower()}'"})
        )
        by_id = graph.get(f"{USERS}/{guid}").json()["id"]
        assert [by_upn, *by_mail, *by_proxy] == [derived("ann@contoso.com")] * 3
        assert by_sid == [derived(sid)]
        assert by_id == guid
    assert len(first.sim.directory) == 3  # created once each, then remembered


def test_the_open_directory_knows_only_well_formed_values() -> None:
    graph = in_process()
    for name, value in [("mail", "not-an-address"), ("onPremisesSecurityIdentifier", "S-1-x")]:
        assert found(graph.get(USERS, params={"$filter": f"{name} eq '{value}'"})) == []
    assert (
        found(
            graph.get(
                USERS,
                params={"$filter": "onPremisesSamAccountName eq 'x'", "$count": "true"},
                headers={"ConsistencyLevel": "eventual"},
            )
        )
        == []
    )
    assert len(graph.sim.directory) == 0


def test_the_open_directory_remembers_what_writes_changed() -> None:
    graph = in_process()
    uid = derived("ann@contoso.com")
    assert graph.patch(f"{USERS}/{uid}", json={"accountEnabled": False}).status_code == 204
    response = graph.get(
        USERS, params={"$filter": "mail eq 'ann@contoso.com'", "$select": "accountEnabled"}
    )
    assert response.json()["value"] == [{"id": uid, "accountEnabled": False}]


def test_the_closed_directory_knows_only_its_users_and_those_added() -> None:
    graph = closed()
    text = "mail in ('bob@contoso.com', 'carol@contoso.com')"
    assert found(graph.get(USERS, params={"$filter": text})) == [BOB.id]
    carol = graph.sim.directory.add(
        DirectoryUser(userPrincipalName="carol@contoso.com", mail="carol@contoso.com")
    )
    assert found(graph.get(USERS, params={"$filter": text})) == [BOB.id, carol.id]
    assert graph.get(USERS).json()["value"] == [
        {
            "id": u.id,
            "displayName": u.displayName,
            "mail": u.mail,
            "userPrincipalName": u.userPrincipalName,
        }
        for u in (ANN, BOB, carol)
    ]


def test_a_directory_file_makes_a_closed_directory(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text(
        json.dumps(
            [
                {"userPrincipalName": "dan@contoso.com", "privileged": True},
                {"id": ANN.id, "userPrincipalName": "ann@contoso.com", "accountEnabled": False},
            ]
        ),
        encoding="utf-8",
    )
    sim = GraphSimulator(settings(directory_file=path))
    dan = sim.directory.peek("dan@contoso.com")
    assert dan is not None and dan.privileged and dan.id == derived("dan@contoso.com")
    ann = sim.directory.get(ANN.id)
    assert ann is not None and ann.accountEnabled is False
    assert sim.directory.peek("someone@contoso.com") is None
    assert len(sim.directory) == 2 and not sim.directory.open


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "not JSON"),
        ('{"userPrincipalName": "a@b.com"}', "JSON array"),
        ('[{"userPrincipalName": "a@b.com", "admin": true}]', "admin"),
        ('[{"mail": "a@b.com"}]', "userPrincipalName"),
        ('[{"id": "42", "userPrincipalName": "a@b.com"}]', "not a GUID"),
    ],
    ids=["not-json", "not-array", "unknown-key", "no-upn", "bad-id"],
)
def test_a_bad_directory_file_says_what_to_fix(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "users.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=says):
        GraphSimulator(settings(directory_file=path))
