"""The guards through the real CLI: protected accounts, a protected group's members, the
signed-in operator and privileged role holders get no write they are guarded from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batcher.auth import SIMULATED_OPERATOR, SIMULATOR_DELEGATED_TOKEN
from batcher.simulator import GraphSimulator, RunningSimulator
from batcher.simulator.directory import derived_id
from tests.helpers import FAST, cli_env, run_cli, write_config, write_ids

pytestmark = pytest.mark.e2e  # the real command in a subprocess

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
    tmp_path: Path, simulator_factory: Any
) -> None:
    spent = []
    for n in (10, 1000):
        sim = simulator_factory(
            FAST.model_copy(update={"role_holders": {ADMIN: ["Global Administrator"]}})
        )
        config = write_config(tmp_path / f"c{n}.toml", sim.url)
        write_ids(tmp_path / f"u{n}.csv", [f"u{i}@contoso.com" for i in range(n)], header="user")
        result = run_cli(
            "run", "--yes", f"u{n}.csv", "-c", config, "--action", "disable",
            "--ledger", f"l{n}.sqlite", "--max-users", str(n), "--json", cwd=tmp_path,
        )  # fmt: skip
        assert result.code == 0, result.stderr
        line = next(x for x in result.json()["result"]["notes"] if "the guards read" in x)
        spent.append(int(line.split(" in ")[1].split()[0]))
    # role definitions, then active and eligible assignments of each of the 9 privileged roles
    assert spent == [1 + 2 * 9, 1 + 2 * 9]


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
    write_ids(tmp_path / "users.csv", users, header="user")
    run = run_cli(
        "run", "--yes", "users.csv", "-c", config, "--action", "disable", "--ledger", "b.sqlite",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    record = sim.simulator.record
    writes_before = len(record.writes)
    undo = run_cli("undo", "b.sqlite", "-c", config, "--yes", "--json", cwd=tmp_path)
    assert undo.code == 0, undo.stderr
    enabled = {w.user_id for w in record.writes[writes_before:] if w.op == "enable"}
    assert enabled == {derived_id("fresh@contoso.com")}
    assert (
        sim.simulator.directory.get(derived_id("was.disabled@contoso.com")).accountEnabled is False
    )


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
