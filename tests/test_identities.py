"""Identity look-ups (``Resolver``) against the simulator's directory in-process: every kind and
stage, quoting, batching, retries, refusals, and exact outcomes against a plain-Python oracle."""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import polars as pl
import pytest

from batcher.calls import Caller, StopSignal
from batcher.errors import AuthError
from batcher.simulator import DirectoryUser, GraphSimulator
from batcher.workers.resolver import NO_ANSWER_REASON, NOT_FOUND_REASON, Resolver
from tests.helpers import TEST_TOKEN, graph_client, ids, paced_caller, sim_settings
from tests.virtual_time import VirtualTime

pytestmark = pytest.mark.anyio
CALLER_KEYS = {"reads", "retry_for", "backoff", "observer"}
QUOTED = re.compile(r"'((?:[^']|'')*)'")


@dataclass
class Looked:
    table: pl.DataFrame
    recorded: list[pl.DataFrame]
    sim: GraphSimulator
    resolver: Resolver
    caller: Caller
    seconds: float

    def row(self, value: str, kind: str | None = None) -> dict[str, Any]:
        rows = [
            r
            for r in self.table.iter_rows(named=True)
            if r["input_value"] == value and kind in (None, r["kind"])
        ]
        assert len(rows) == 1, (value, rows)
        return rows[0]

    @property
    def filters(self) -> list[str]:
        return self.sim.record.filters


def _frame(identities: Sequence[tuple[str, str]]) -> pl.DataFrame:
    """(kind, value) pairs as the look-up's input frame."""
    return pl.DataFrame(
        {
            "input_value": [v for _, v in identities],
            "kind": [k for k, _ in identities],
            "source_file": ["in.csv"] * len(identities),
            "source_row": list(range(1, len(identities) + 1)),
        }
    )


async def _resolve(
    identities: Sequence[tuple[str, str]],
    *,
    users: list[DirectoryUser] | None = None,
    max_in_flight: int = 4,
    stop: StopSignal | None = None,
    time: VirtualTime | None = None,
    **options: Any,
) -> Looked:
    """Look ``identities`` up: ``options`` are simulator settings, or the caller's. ``time``:
    the pacers, back-offs and Graph's budgets on that virtual clock."""
    caller = paced_caller(time=time, **{k: v for k, v in options.items() if k in CALLER_KEYS})
    changes = {k: v for k, v in options.items() if k not in CALLER_KEYS}
    budget_clock = {} if time is None else {"budget_clock": time.clock}
    sim = GraphSimulator(sim_settings(**changes), tokens={TEST_TOKEN}, users=users, **budget_clock)
    recorded: list[pl.DataFrame] = []
    started = anyio.current_time()
    async with contextlib.AsyncExitStack() as stack:
        if time is not None:
            await stack.enter_async_context(time.running())
        client = await stack.enter_async_context(graph_client(sim, time=time))
        resolver = Resolver(
            client,
            caller,
            record=recorded.append,
            max_in_flight=max_in_flight,
            control=caller.control,
        )
        with anyio.fail_after(10):  # a look-up that never ends fails here, not by hanging
            if stop is None:
                table = await resolver.resolve(_frame(identities))
            else:
                with stop.attached(caller.control):
                    table = await resolver.resolve(_frame(identities))
    return Looked(table, recorded, sim, resolver, caller, anyio.current_time() - started)


def _values(odata_filter: str) -> list[str]:
    """The values a decoded $filter compares with."""
    return [v.replace("''", "'") for v in QUOTED.findall(odata_filter)]


def _user(n: int, **fields: Any) -> DirectoryUser:
    fields.setdefault("userPrincipalName", f"user{n}@contoso.com")
    return DirectoryUser(id=ids(n + 1, seed=5)[n], **fields)


async def test_every_kind_and_stage_resolves(tmp_path: Any) -> None:
    eve = _user(0, userPrincipalName="eve@contoso.com")
    ann = _user(1, userPrincipalName="ann@contoso.com")
    bob = _user(2, userPrincipalName="bob@contoso.onmicrosoft.com", mail="bob@contoso.com")
    cat = _user(
        3,
        userPrincipalName="cat@contoso.com",
        mail="cat@contoso.com",
        proxyAddresses=["SMTP:cat@contoso.com", "smtp:catherine@old.contoso.com"],
    )
    dan = _user(
        4, userPrincipalName="dan@contoso.com", onPremisesSecurityIdentifier="S-1-5-21-1-2-3-1104"
    )
    looked = await _resolve(
        [
            ("object_id", eve.id),
            ("upn", "ann@contoso.com"),
            ("upn", "bob@contoso.com"),
            ("upn", "catherine@old.contoso.com"),
            ("sid", "S-1-5-21-1-2-3-1104"),
        ],
        users=[eve, ann, bob, cat, dan],
    )
    expected = {
        eve.id: (eve, "object_id"),
        "ann@contoso.com": (ann, "upn"),
        "bob@contoso.com": (bob, "mail"),
        "catherine@old.contoso.com": (cat, "proxy_address"),
        "S-1-5-21-1-2-3-1104": (dan, "sid"),
    }
    for value, (user, matched_by) in expected.items():
        row = looked.row(value)
        assert (row["outcome"], row["user_id"], row["matched_by"]) == (
            "resolved",
            user.id,
            matched_by,
        )
        assert row["user_principal_name"] == user.userPrincipalName
        assert row["user_type"] == "Member" and row["account_enabled"] is True
        assert row["source_file"] == "in.csv"
    # each stage asks only for what is still missing, in order
    stages = [(f.split(" ")[0], _values(f)) for f in looked.filters]
    assert stages == [
        ("id", [eve.id]),
        ("userPrincipalName", ["ann@contoso.com", "bob@contoso.com", "catherine@old.contoso.com"]),
        ("mail", ["bob@contoso.com", "catherine@old.contoso.com"]),
        ("proxyAddresses/any(p:p", ["smtp:catherine@old.contoso.com"]),
        ("onPremisesSecurityIdentifier", ["S-1-5-21-1-2-3-1104"]),
    ]


async def test_an_apostrophe_reaches_graph_doubled() -> None:
    looked = await _resolve([("upn", "o'brien@contoso.com")])
    row = looked.row("o'brien@contoso.com")
    assert (row["outcome"], row["user_principal_name"]) == ("resolved", "o'brien@contoso.com")
    assert looked.filters[0] == "userPrincipalName eq 'o''brien@contoso.com'"


async def test_an_ext_address_or_a_guest_user_type_is_a_guest() -> None:
    external = "ann_fabrikam.com#EXT#@contoso.onmicrosoft.com"
    guest = _user(1, userPrincipalName="bob@contoso.com", userType="Guest")
    member = _user(2, userPrincipalName=external)  # userType wrong, the #EXT# UPN tells
    looked = await _resolve([("upn", external), ("upn", "bob@contoso.com")], users=[guest, member])
    for value, user in ((external, member), ("bob@contoso.com", guest)):
        row = looked.row(value)
        assert (row["outcome"], row["user_id"]) == ("guest", user.id)
        assert "guest" in row["reason"]
    open_directory = await _resolve([("upn", external)])
    row = open_directory.row(external)
    assert (row["outcome"], row["user_type"]) == ("guest", "Guest")
    assert _values(open_directory.filters[0]) == [external]  # the # reached Graph


async def test_a_plus_address_resolves() -> None:
    looked = await _resolve([("upn", "ann+ir@contoso.com")])
    row = looked.row("ann+ir@contoso.com")
    assert (row["outcome"], row["user_principal_name"]) == ("resolved", "ann+ir@contoso.com")
    assert _values(looked.filters[0]) == ["ann+ir@contoso.com"]  # not a space


async def test_case_and_whitespace_variants_resolve_to_one_user() -> None:
    sid = "S-1-5-21-9-9-9-500"
    ann = _user(
        1,
        userPrincipalName="Ann.Lee@Contoso.com",
        mail="Ann.Lee@Contoso.com",
        proxyAddresses=["SMTP:Ann.Lee@Contoso.com", "smtp:ann.old@contoso.com"],
        onPremisesSecurityIdentifier=sid,
    )
    variants = [
        ("upn", "ann.lee@contoso.com"),
        ("upn", "ANN.LEE@CONTOSO.COM"),
        ("upn", "  Ann.Lee@contoso.com \t"),
        ("upn", "Ann.Old@Contoso.com"),
        ("upn", " ann.old@contoso.com"),
        ("sid", sid.lower()),
        ("sid", f" {sid} "),
        ("object_id", ann.id.upper()),
        ("object_id", f" {ann.id}"),
    ]
    looked = await _resolve(variants, users=[ann])
    assert looked.table.height == len(variants)
    for kind, value in variants:
        row = looked.row(value, kind)
        assert (row["outcome"], row["user_id"]) == ("resolved", ann.id), (kind, value, row)
    matched = {value: looked.row(value, kind)["matched_by"] for kind, value in variants}
    assert matched["Ann.Old@Contoso.com"] == matched[" ann.old@contoso.com"] == "proxy_address"
    # one identity, one look-up: the directory is asked once per identity and stage
    asked = Counter(v.strip().lower() for f in looked.filters for v in _values(f))
    assert asked == {
        ann.id: 1,
        "ann.lee@contoso.com": 1,
        "ann.old@contoso.com": 2,  # by UPN, then by mail
        "smtp:ann.old@contoso.com": 1,
        sid.lower(): 1,
    }


async def test_15_values_per_filter_and_20_filters_per_batch() -> None:
    upns = [f"person{n}@contoso.com" for n in range(301)]
    looked = await _resolve([("upn", u) for u in upns])
    assert set(looked.table["outcome"]) == {"resolved"}
    assert looked.table.height == 301
    record = looked.sim.record
    assert (record.batches, len(looked.filters), record.inner_requests) == (2, 21, 21)
    assert looked.resolver.requests == 2
    sizes = [len(_values(f)) for f in looked.filters]
    assert max(sizes) == 15 and sum(sizes) == 301


async def test_an_inner_429_waits_for_retry_after_and_completes() -> None:
    upns = [f"person{n}@contoso.com" for n in range(16)]  # two filters in one batch
    looked = await _resolve(
        [("upn", u) for u in upns], directory_reads_per_second=1.0, directory_reads_burst=1
    )
    record = looked.sim.record
    assert set(looked.table["outcome"]) == {"resolved"} and looked.table.height == 16
    assert record.inner_statuses[429] == 1 and record.batches == 2
    first, second = sorted(t for t, _ in record.answers)
    assert second - first >= 0.95  # Retry-After: 1
    assert looked.caller.control.tally.throttled == 1


async def test_inner_5xx_are_retried() -> None:
    upns = [f"person{n}@contoso.com" for n in range(100)]
    looked = await _resolve(
        [("upn", u) for u in upns], directory_faults={"500": 0.3, "503": 0.3}, seed=3
    )
    record = looked.sim.record
    assert record.inner_statuses[500] > 0 and record.inner_statuses[503] > 0
    assert set(looked.table["outcome"]) == {"resolved"} and looked.table.height == 100
    assert looked.resolver.requests > 1


async def test_inner_5xx_past_the_retry_window_end_the_look_up_uncached() -> None:
    """Nobody observed these users missing: they are not acted on, and not cached either, so
    the same command looks them up again."""
    upns = [f"person{n}@contoso.com" for n in range(20)]
    looked = await _resolve(
        [("upn", u) for u in upns], directory_faults={"500": 1.0}, retry_for=0.2
    )
    assert looked.table.height == 20
    assert set(looked.table["outcome"]) == {"not_looked_up"}  # not "not found": unobserved
    assert set(looked.table["reason"]) == {NO_ANSWER_REASON}
    assert looked.seconds < 2.0
    assert looked.recorded == []


async def test_a_400_names_the_refused_value_alone() -> None:
    good = ids(14, seed=8)
    values = [*good[:7], "not-a-guid", *good[7:]]  # 15 values: one filter
    looked = await _resolve([("object_id", v) for v in values])
    bad = looked.row("not-a-guid")
    assert bad["outcome"] == "not_found" and bad["user_id"] is None
    assert "400" in bad["reason"] and "Invalid object identifier 'not-a-guid'" in bad["reason"]
    for value in good:
        assert looked.row(value)["outcome"] == "resolved"
    # bisection: about log2(15) levels for one offender, not one look-up per value
    assert len(looked.filters) <= 1 + 2 * 4
    assert [_values(f) for f in looked.filters if len(_values(f)) == 1].count(["not-a-guid"]) == 1


async def test_a_403_trips_naming_user_read_all_and_records_nothing() -> None:
    values = [("upn", f"person{n}@contoso.com") for n in range(40)] + [("sid", "S-1-5-21-1")]
    looked = await _resolve(values, directory_read_denied=True)
    tripped = looked.caller.control.breaker.tripped
    assert isinstance(tripped, AuthError) and "User.Read.All" in str(tripped)
    assert "403" in str(tripped)
    assert looked.recorded == [] and looked.table.height == 0
    assert looked.sim.record.batches == 1  # stopped at the first refusal


async def test_two_users_sharing_a_mail_are_ambiguous() -> None:
    one = _user(1, userPrincipalName="a1@contoso.com", mail="team@contoso.com")
    two = _user(2, userPrincipalName="a2@contoso.com", mail="team@contoso.com")
    looked = await _resolve([("upn", "team@contoso.com")], users=[one, two])
    row = looked.row("team@contoso.com")
    assert (row["outcome"], row["user_id"], row["matched_by"]) == ("ambiguous", None, "mail")
    assert one.id in row["reason"] and two.id in row["reason"]


async def test_what_no_user_has_is_not_found() -> None:
    someone = _user(1)
    missing = [
        ("upn", "nobody@contoso.com"),
        ("sid", "S-1-5-21-7-7-7-7"),
        ("object_id", ids(1, seed=77)[0]),
    ]
    looked = await _resolve(missing, users=[someone])
    for kind, value in missing:
        row = looked.row(value)
        assert (row["outcome"], row["user_id"]) == ("not_found", None)
        assert row["reason"] == NOT_FOUND_REASON[kind]
    searched = [f.split(" ")[0] for f in looked.filters]  # a UPN is tried three ways
    assert searched.count("userPrincipalName") == searched.count("mail") == 1
    assert searched.count("proxyAddresses/any(p:p") == 1


async def test_the_record_callback_receives_every_outcome_once() -> None:
    one = _user(1, userPrincipalName="a1@contoso.com", mail="team@contoso.com")
    two = _user(2, userPrincipalName="a2@contoso.com", mail="team@contoso.com")
    guest = _user(3, userPrincipalName="g@contoso.com", userType="Guest")
    values = [
        ("upn", "a1@contoso.com"),
        ("upn", "A1@contoso.com"),
        ("upn", "team@contoso.com"),
        ("upn", "g@contoso.com"),
        ("upn", "nobody@contoso.com"),
        ("object_id", one.id),
        ("object_id", "not-a-guid"),
        ("sid", "S-1-5-21-1"),
    ] + [("upn", f"x{n}@contoso.com") for n in range(40)]
    looked = await _resolve(values, users=[one, two, guest])
    recorded = pl.concat(looked.recorded)
    keys = list(zip(recorded["kind"], recorded["input_value"], strict=True))
    assert sorted(keys) == sorted(values)  # every one, once
    assert recorded.sort("source_row").equals(looked.table.sort("source_row"))


def _directory() -> list[DirectoryUser]:
    """300 users: some with a mail that is not their UPN, old aliases, SIDs, guests, and two
    pairs sharing a mail."""
    users = []
    shared = {1: "helpdesk@contoso.com", 2: "helpdesk@contoso.com", 51: "ops@contoso.com"}
    shared[52] = "ops@contoso.com"
    for n in range(300):
        upn = f"u{n}@contoso.com"
        mail = shared.get(n) or (f"first.last{n}@contoso.com" if n % 5 == 0 else upn)
        proxies = [f"SMTP:{mail}"] + ([f"smtp:old{n}@legacy.contoso.com"] if n % 7 == 0 else [])
        users.append(
            _user(
                n,
                userPrincipalName=upn,
                mail=mail,
                proxyAddresses=proxies,
                onPremisesSecurityIdentifier=f"S-1-5-21-10-20-30-{1000 + n}"
                if n % 3 == 0
                else None,
                userType="Guest" if n % 11 == 0 else "Member",
            )
        )
    return users


def _oracle(
    users: list[DirectoryUser], kind: str, value: str
) -> tuple[str, str | None, str | None]:
    """(outcome, user_id, matched_by) by the rules, in plain Python."""
    v = value.strip().lower()
    stages: dict[str, list[tuple[str, Callable[[DirectoryUser], bool]]]] = {
        "object_id": [("object_id", lambda u: u.id == v)],
        "upn": [
            ("upn", lambda u: u.userPrincipalName.lower() == v),
            ("mail", lambda u: (u.mail or "").lower() == v),
            ("proxy_address", lambda u: f"smtp:{v}" in [p.lower() for p in u.proxyAddresses]),
        ],
        "sid": [("sid", lambda u: (u.onPremisesSecurityIdentifier or "").lower() == v)],
    }
    for matched_by, test in stages[kind]:
        found = [u for u in users if test(u)]
        if len(found) > 1:
            return "ambiguous", None, matched_by
        if found:
            user = found[0]
            guest = user.userType == "Guest" or "#ext#" in user.userPrincipalName.lower()
            return ("guest" if guest else "resolved"), user.id, matched_by
    return "not_found", None, None


async def test_outcomes_match_a_plain_python_oracle() -> None:
    users = _directory()
    wanted: list[tuple[str, str]] = []
    wanted += [("object_id", u.id) for n, u in enumerate(users) if n % 4 == 0]
    wanted += [("object_id", g) for g in ids(10, seed=31)]
    wanted += [("upn", u.userPrincipalName) for n, u in enumerate(users) if n % 4 == 1]
    wanted += [("upn", str(u.mail)) for n, u in enumerate(users) if n % 5 == 0]
    wanted += [("upn", f"old{n}@legacy.contoso.com") for n in range(0, 300, 7)]
    wanted += [("upn", f"Old{n}@Legacy.Contoso.com") for n in range(0, 300, 14)]  # case differs
    wanted += [("upn", f"U{n}@Contoso.com") for n in range(3, 300, 40)]
    wanted += [("upn", f"gone{n}@contoso.com") for n in range(20)]
    wanted += [("upn", "helpdesk@contoso.com"), ("upn", "ops@contoso.com")]
    wanted += [("sid", f"S-1-5-21-10-20-30-{1000 + n}") for n in range(0, 300, 6)]
    wanted += [("sid", f"S-1-5-21-99-{n}") for n in range(5)]
    wanted = list(dict.fromkeys(wanted))
    looked = await _resolve(wanted, users=users)
    assert looked.table.height == len(wanted)
    expected = {(k, v): _oracle(users, k, v) for k, v in wanted}
    got = {
        (r["kind"], r["input_value"]): (r["outcome"], r["user_id"], r["matched_by"])
        for r in looked.table.iter_rows(named=True)
    }
    assert got == expected
    tally = Counter(outcome for outcome, _, _ in expected.values())
    assert dict(Counter(looked.table["outcome"])) == dict(tally)
    assert set(tally) == {"resolved", "guest", "ambiguous", "not_found"}


async def test_a_stop_records_no_outcome_for_what_was_not_looked_up() -> None:
    """Stopped while the second batch waits for its turn: what the first batch found is
    recorded; the rest is not called not_found (a resume must look it up). The reads pacer is
    on a virtual clock that stands still until the first answer is in: the second batch's
    turn comes after the stop, however slowly a loaded host answers."""
    stop = StopSignal()
    asked: list[bool] = []

    def observer(event: str, **fields: Any) -> None:
        if event == "request" and not asked:
            asked.append(True)
            stop.ask()

    upns = [f"person{n}@contoso.com" for n in range(301)]  # 21 filters: two batches
    time = VirtualTime()
    looked = await _resolve(
        [("upn", u) for u in upns], reads=100.0, observer=observer, stop=stop, time=time
    )
    assert asked and looked.sim.record.batches == 1
    assert time.sleeps  # the second batch did wait for its turn
    assert looked.table.height == 300 and set(looked.table["outcome"]) == {"resolved"}
    recorded = pl.concat(looked.recorded)
    assert sorted(recorded["input_value"]) == sorted(looked.table["input_value"])
    assert "person300@contoso.com" not in set(recorded["input_value"])
