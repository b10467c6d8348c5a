"""The guards through the real CLI: protected accounts, a protected group's members, the
signed-in operator and privileged role holders get no write they are guarded from (what the
guards cost in reads, in-process with the real job)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batcher.auth import SIMULATED_OPERATOR, SIMULATOR_DELEGATED_TOKEN
from batcher.simulator import GraphSimulator, RunningSimulator
from batcher.simulator.directory import derived_id
from tests.helpers import (
    FAST,
    Rig,
    cli_env,
    counts,
    ledger_in_process,
    run_cli,
    states,
    write_config,
    write_ids,
)

GROUP = "11111111-2222-4333-8444-555555555555"
ADMIN = "admin@contoso.com"
PLAIN = "ann@contoso.com"
GUARDS = {
    "role_holders": {ADMIN: ["Global Administrator"]},
    "eligible_role_holders": {"pim@contoso.com": ["Privileged Role Administrator"]},
    "groups": {GROUP: ["member@contoso.com"]},
}
SAFETY = {"protected": ["breakglass@contoso.com", f"group:{GROUP}"]}
USERS = [
    PLAIN,
    "breakglass@contoso.com",
    "member@contoso.com",
    ADMIN,
    "pim@contoso.com",
    SIMULATED_OPERATOR,  # the signed-in operator, named by object ID in the input
]


def _delegated(tmp_path: Path, **guards: Any) -> tuple[RunningSimulator, Path]:
    settings = FAST.model_copy(update={**GUARDS, **guards})
    server = RunningSimulator(GraphSimulator(settings, tokens={SIMULATOR_DELEGATED_TOKEN}))
    server.__enter__()
    config = write_config(tmp_path / "config.toml", server.url, safety=SAFETY)
    write_ids(tmp_path / "users.csv", USERS, header="user")
    return server, config


def _run(tmp_path: Path, config: Path, *args: str) -> Any:
    env = cli_env(BATCHER_ACCESS_TOKEN=SIMULATOR_DELEGATED_TOKEN)
    return run_cli(
        "run", "--yes", "users.csv", "-c", config, "--ledger", "l.sqlite", "--json", *args,
        cwd=tmp_path, env=env,
    )  # fmt: skip


@pytest.mark.e2e  # the real command in a subprocess
def test_protected_users_a_group_member_an_admin_and_the_operator_get_no_write_all_reported(
    tmp_path: Path,
) -> None:
    server, config = _delegated(tmp_path)
    try:
        result = _run(tmp_path, config, "--contain", "--action", "reset-password")
        record = server.simulator.record
    finally:
        server.__exit__(None, None, None)
    assert result.code == 0, result.stderr
    ids = {u: (u if "@" not in u else derived_id(u)) for u in USERS}
    protected = {ids[u] for u in USERS[1:3]} | {SIMULATED_OPERATOR}
    admins = {ids[ADMIN], ids["pim@contoso.com"]}
    written = {(w.op, w.user_id) for w in record.writes}
    # disable and reset-password touch access: only the plain user; revoking sessions does not
    # lock an administrator out: they are not held back from it; protected users get nothing
    assert written == {("disable", ids[PLAIN]), ("reset", ids[PLAIN])} | {
        ("revoke", u) for u in {ids[PLAIN]} | admins
    }
    confirmed = set(record.accepted["confirmCompromised"])
    assert confirmed == {ids[PLAIN]} | admins  # confirm changes risk, not access: not held back
    assert not confirmed & protected  # a protected user gets no write of any action
    guarded = {g["user_id"]: g for g in result.json()["result"]["guarded"]}
    assert {u: g["verdict"] for u, g in guarded.items()} == {
        **dict.fromkeys(protected, "protected"),
        **dict.fromkeys(admins, "held_back"),
    }
    assert guarded[SIMULATED_OPERATOR]["why"] == "the signed-in operator"
    assert guarded[ids["breakglass@contoso.com"]]["why"] == "breakglass@contoso.com"
    assert guarded[ids["member@contoso.com"]]["why"] == f"group:{GROUP}"
    assert guarded[ids[ADMIN]]["roles"] == "Global Administrator"
    assert guarded[ids["pim@contoso.com"]]["roles"] == "Privileged Role Administrator (eligible)"
    assert "admin@contoso.com (Global Administrator)" in result.stderr  # by name in the gate
    report = pl.read_csv(tmp_path / result.json()["result"]["report"])
    shown = dict(report.filter(pl.col("action").is_null()).select("user_id", "state").iter_rows())
    assert shown == {u: g["verdict"] for u, g in guarded.items()}


@pytest.mark.e2e  # the real command in a subprocess
def test_include_admins_acts_later_on_administrators_an_earlier_run_held_back(
    tmp_path: Path,
) -> None:
    server, config = _delegated(tmp_path)
    try:
        first = _run(tmp_path, config, "--action", "disable")
        held = {w.user_id for w in server.simulator.record.writes}
        again = _run(tmp_path, config, "--action", "disable", "--include-admins")
        after = {w.user_id for w in server.simulator.record.writes}
    finally:
        server.__exit__(None, None, None)
    assert first.code == 0 and again.code == 0, again.stderr
    assert held == {derived_id(PLAIN)}
    assert after - held == {derived_id(ADMIN), derived_id("pim@contoso.com")}
    verdicts = {g["verdict"] for g in again.json()["result"]["guarded"]}
    assert verdicts == {"protected"}  # still no write for the protected ones


@pytest.mark.e2e  # the real command in a subprocess
def test_a_protected_group_that_cannot_be_read_stops_before_any_write_naming_the_permission(
    tmp_path: Path, simulator_factory: Any
) -> None:
    denied = simulator_factory(FAST.model_copy(update={**GUARDS, "group_read_denied": True}))
    config = write_config(tmp_path / "config.toml", denied.url, safety=SAFETY)
    write_ids(tmp_path / "users.csv", USERS, header="user")
    result = run_cli(
        "run", "--yes", "users.csv", "-c", config, "--contain", "--ledger", "l.sqlite",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 3, result.stderr
    assert "GroupMember.Read.All" in result.stderr and "Traceback" not in result.stderr
    record = denied.simulator.record
    assert record.writes == [] and record.accepted["confirmCompromised"] == []


@pytest.mark.e2e  # the real command in a subprocess
def test_held_back_administrators_are_named_in_the_gate_up_to_20_then_counted(
    tmp_path: Path, simulator_factory: Any
) -> None:
    admins = [f"admin{i:02}@contoso.com" for i in range(25)]
    sim = simulator_factory(
        FAST.model_copy(update={"role_holders": {a: ["User Administrator"] for a in admins}})
    )
    config = write_config(tmp_path / "config.toml", sim.url)
    write_ids(tmp_path / "users.csv", admins, header="user")
    result = run_cli(
        "run", "--yes", "users.csv", "-c", config, "--action", "disable", "--ledger", "l.sqlite",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    line = next(n for n in result.json()["result"]["notes"] if "held back" in n)
    assert line.startswith("25 users with a privileged directory role held back from disable")
    assert sum(f"{a} (User Administrator)" in line for a in admins) == 20
    assert line.endswith("and 5 more (see --json or the report)")
    assert sim.simulator.record.writes == []


def test_the_role_check_takes_the_same_few_listings_for_10_and_for_1000_users(
    tmp_path: Path,
) -> None:
    spent = []
    for n in (10, 1000):  # the real job, the simulator in-process: the reads, not the console
        rig = Rig(
            tmp_path / f"t{n}",
            FAST.model_copy(update={"role_holders": {ADMIN: ["Global Administrator"]}}),
        )
        people = write_ids(
            tmp_path / f"u{n}.csv", [f"u{i}@contoso.com" for i in range(n)], header="user"
        )
        ran = rig.run(people, ("disable",), tmp_path / f"l{n}.sqlite")
        assert (ran.stopped, ran.failed, ran.unknown, ran.inputs.resolved) == (None, 0, 0, n)
        line = next(x for x in ran.notes if "the guards read" in x)
        spent.append(int(line.split(" in ")[1].split()[0]))
    # role definitions, then active and eligible assignments of each of the 9 privileged roles
    assert spent == [1 + 2 * 9, 1 + 2 * 9]


@pytest.mark.e2e  # the real command in a subprocess
def test_undo_leaves_an_account_disabled_before_the_run_disabled(
    tmp_path: Path, simulator_factory: Any
) -> None:
    directory = tmp_path / "users.json"
    directory.write_text(
        '[{"userPrincipalName": "was.disabled@contoso.com", "accountEnabled": false},'
        ' {"userPrincipalName": "fresh@contoso.com"}]',
        encoding="utf-8",
    )
    sim = simulator_factory(FAST.model_copy(update={"directory_file": directory}))
    config = write_config(tmp_path / "config.toml", sim.url)
    users = ["was.disabled@contoso.com", "fresh@contoso.com"]
    people = write_ids(tmp_path / "users.csv", users, header="user")
    ledger_in_process(sim.simulator, people, ("disable",), tmp_path / "b.sqlite")  # the setup
    record = sim.simulator.record
    writes_before = len(record.writes)
    undo = run_cli("undo", "b.sqlite", "-c", config, "--yes", "--json", cwd=tmp_path)
    assert undo.code == 0, undo.stderr
    enabled = {w.user_id for w in record.writes[writes_before:] if w.op == "enable"}
    assert enabled == {derived_id("fresh@contoso.com")}
    assert (
        sim.simulator.directory.get(derived_id("was.disabled@contoso.com")).accountEnabled is False
    )


@pytest.mark.e2e  # the real command in a subprocess
def test_the_whole_clean_up_reaches_no_protected_user_and_no_held_back_administrator(
    tmp_path: Path,
) -> None:
    fast = {"reports_per_second": 500.0, "reports_burst": 100}
    server, _ = _delegated(tmp_path, **fast)
    budgets = {"reports_per_window": 100, "reports_window_seconds": 1.0}
    config = write_config(tmp_path / "config.toml", server.url, safety=SAFETY, budgets=budgets)
    try:
        result = _run(tmp_path, config, "--remediate", "--max-users", "10")
        graph = server.simulator
    finally:
        server.__exit__(None, None, None)
    assert result.code == 0, result.stderr
    ids = {u: (u if "@" not in u else derived_id(u)) for u in USERS}
    plain, admins = ids[PLAIN], {ids[ADMIN], ids["pim@contoso.com"]}
    # every step that changes access (block, password, sign-in methods, mailbox rules) reached
    # the plain user alone: protected users get nothing, administrators are held back
    touched = {w.user_id for w in graph.record.writes if w.op != "revoke"}
    touched |= {uid for uid, _ in graph.auth_methods.deleted}
    touched |= {uid for uid, _, _ in graph.mail_rules.changed}
    assert touched == {plain}
    assert graph.auth_methods.deleted  # the plain user's methods were removed
    revoked = {w.user_id for w in graph.record.writes if w.op == "revoke"}
    assert revoked == {plain} | admins  # signing an administrator out locks no one out


@pytest.mark.e2e  # the real command in a subprocess
def test_undo_leaves_a_user_confirmed_compromised_before_the_run_confirmed(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(FAST)
    graph = sim.simulator
    was, fresh = derived_id("was.confirmed@contoso.com"), derived_id("fresh@contoso.com")
    graph.record.apply("confirmCompromised", [was], "confirmedCompromised")  # before the run
    config = write_config(tmp_path / "config.toml", sim.url)
    people = write_ids(tmp_path / "users.csv", [was, fresh], header="user")
    ledger_in_process(graph, people, ("confirm",), tmp_path / "c.sqlite")  # the setup: the run
    assert graph.record.risk_state == dict.fromkeys([was, fresh], "confirmedCompromised")
    undo = run_cli("undo", "c.sqlite", "-c", config, "--yes", "--json", cwd=tmp_path)
    assert undo.code == 0, undo.stderr
    assert graph.record.accepted["dismiss"] == [fresh]  # only the user this run confirmed
    assert graph.record.risk_state[was] == "confirmedCompromised"
    notes = undo.json()["result"]["notes"]
    assert any("1 users already read" in n and "they stay so" in n for n in notes), notes


@pytest.mark.e2e  # the real command in a subprocess
def test_replay_sends_no_write_to_a_user_protected_since_the_run(
    tmp_path: Path, simulator_factory: Any
) -> None:
    plain, later = derived_id(PLAIN), derived_id("later@contoso.com")
    sim = simulator_factory(FAST.model_copy(update={"bad_ids": [plain, later]}))
    config = write_config(tmp_path / "config.toml", sim.url)
    people = write_ids(tmp_path / "users.csv", [plain, later], header="user")
    ledger_in_process(sim.simulator, people, ("confirm",), tmp_path / "r.sqlite")  # the setup
    assert counts(tmp_path / "r.sqlite") == {"confirm": {"failed": 2}}
    write_config(config, sim.url, safety={"protected": [later]})  # protected since the run
    refused = sim.simulator.record.statuses[400]
    replay = run_cli("replay", "r.sqlite", "-c", config, "--yes", "--json", cwd=tmp_path)
    assert replay.code in (0, 1), replay.stderr
    result = replay.json()["result"]
    assert result["actions"]["confirm"]["failed"] == 1  # the plain user's step, sent again
    assert sim.simulator.record.statuses[400] == refused + 1  # one request: not the protected
    assert [(g["user_id"], g["verdict"]) for g in result["guarded"]] == [(later, "protected")]


@pytest.mark.e2e  # the real command in a subprocess
def test_undo_re_enables_an_administrator_the_run_disabled_but_no_protected_user(
    tmp_path: Path,
) -> None:
    server, _ = _delegated(tmp_path)
    config = write_config(tmp_path / "config.toml", server.url)
    users = [PLAIN, ADMIN, "later@contoso.com"]
    people = write_ids(tmp_path / "users.csv", users, header="user")
    env = cli_env(BATCHER_ACCESS_TOKEN=SIMULATOR_DELEGATED_TOKEN)
    try:
        ledger_in_process(  # the setup: `run --include-admins --action disable`, signed in
            server.simulator, people, ("disable",), tmp_path / "u.sqlite",
            token=SIMULATOR_DELEGATED_TOKEN, options={"include_admins": True},
        )  # fmt: skip
        # the run disabled the administrator (held back without --include-admins)
        assert states(tmp_path / "u.sqlite")[derived_id(ADMIN)] == "done"
        write_config(config, server.url, safety={"protected": ["later@contoso.com"]})
        record = server.simulator.record
        writes_before = len(record.writes)
        undo = run_cli("undo", "u.sqlite", "-c", config, "--yes", "--json", cwd=tmp_path, env=env)
        directory = server.simulator.directory
    finally:
        server.__exit__(None, None, None)
    assert undo.code == 0, undo.stderr
    enabled = {w.user_id for w in record.writes[writes_before:]}
    # enabling an administrator again restores what the run did: not held back
    assert enabled == {derived_id(PLAIN), derived_id(ADMIN)}
    assert directory.get(derived_id("later@contoso.com")).accountEnabled is False
    guarded = undo.json()["result"]["guarded"]
    assert [(g["user_id"], g["verdict"]) for g in guarded] == [
        (derived_id("later@contoso.com"), "protected")
    ]


@pytest.mark.e2e  # the real command in a subprocess
def test_a_plan_names_each_users_verdict_and_apply_spares_one_protected_since_the_plan(
    tmp_path: Path,
) -> None:
    server, config = _delegated(tmp_path)
    users = [PLAIN, "breakglass@contoso.com", ADMIN, "later@contoso.com"]
    write_ids(tmp_path / "users.csv", users, header="user")
    env = cli_env(BATCHER_ACCESS_TOKEN=SIMULATOR_DELEGATED_TOKEN)
    actions = ("--action", "disable", "--action", "confirm")
    try:
        made = run_cli(
            "plan", "users.csv", "-c", config, *actions, "--out", "p.json", cwd=tmp_path, env=env
        )  # fmt: skip
        assert made.code == 0, made.stderr
        written = len(server.simulator.record.writes)
        later = {"protected": [*SAFETY["protected"], "later@contoso.com"]}
        write_config(config, server.url, safety=later)  # protected since the plan was made
        done = run_cli("apply", "p.json", "-c", config, "--yes", "--json", cwd=tmp_path, env=env)
        record = server.simulator.record
    finally:
        server.__exit__(None, None, None)
    content = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    by_id = {u["user_id"]: u for u in content["users"]}
    plain, guard, admin = (derived_id(u) for u in users[:3])
    assert {u: by_id[u]["verdict"] for u in (plain, guard, admin)} == {
        plain: "act",
        guard: "protected",
        admin: "held_back",
    }
    assert by_id[guard]["why"] == "breakglass@contoso.com"
    assert by_id[guard]["steps"] == {"disable": "protected", "confirm": "protected"}
    assert by_id[admin]["roles"] == ["Global Administrator"]
    assert by_id[admin]["steps"] == {"disable": "held_back", "confirm": "send"}
    assert written == 0  # a plan sends no write
    assert done.code == 0, done.stderr
    assert {(w.op, w.user_id) for w in record.writes} == {("disable", plain)}
    # the user protected since the plan gets no write; the held-back administrator, confirm
    assert set(record.accepted["confirmCompromised"]) == {plain, admin}
    guarded = {g["user_id"]: g["verdict"] for g in done.json()["result"]["guarded"]}
    assert guarded[derived_id("later@contoso.com")] == "protected"
