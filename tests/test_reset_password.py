"""reset-password through the real CLI: a random password per user that is written nowhere but
--passwords-out, synced users skipped, administrators refused alone, no undo, verify reads it
(each user's order of steps in-process, with the real job)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from batcher.passwords import KINDS, Secret, new_password
from batcher.simulator import DirectoryUser
from tests.helpers import FAST, CliResult, Rig, ledger_in_process, run_cli, write_config, write_ids

ACTION = "reset-password"
ANN = DirectoryUser(userPrincipalName="ann@contoso.com")
BEN = DirectoryUser(userPrincipalName="ben@contoso.com")
SAM = DirectoryUser(userPrincipalName="sam@contoso.com", onPremisesSyncEnabled=True)
ADA = DirectoryUser(userPrincipalName="ada@contoso.com", privileged=True)
PEOPLE = (ANN, BEN, SAM, ADA)


def _tenant(tmp_path: Path, simulator_factory: Any) -> tuple[Any, Path, Path]:
    """A simulator holding PEOPLE, a config sending to it, and an input listing them."""
    users = tmp_path / "directory.json"
    users.write_text(json.dumps([_graph(u) for u in PEOPLE]), encoding="utf-8")
    sim = simulator_factory(FAST.model_copy(update={"directory_file": users}))
    config = write_config(tmp_path / "config.toml", sim.url)
    people = write_ids(tmp_path / "people.csv", [u.userPrincipalName for u in PEOPLE], "upn")
    return sim, config, people


def _graph(user: DirectoryUser) -> dict[str, Any]:
    shown = user.to_graph()
    shown["privileged"] = user.privileged
    return {k: v for k, v in shown.items() if v not in (None, [])}


def _run(tmp_path: Path, *args: str | Path) -> CliResult:
    return run_cli("run", "--yes", *args, cwd=tmp_path)


@pytest.mark.e2e  # the real command in a subprocess
def test_the_password_never_appears_in_any_file_or_stream(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim, config, people = _tenant(tmp_path, simulator_factory)
    ledger, log = tmp_path / "l.sqlite", tmp_path / "events.jsonl"
    common = ("-c", config, "--ledger", ledger)
    ran = _run(
        tmp_path, people, *common, "--action", "disable", "--action", ACTION, "--action",
        "revoke-sessions", "--json", "--log-file", log,
    )  # fmt: skip
    reported = run_cli("report", ledger, "-o", tmp_path / "report.csv", cwd=tmp_path)
    verified = run_cli("verify", ledger, "-c", config, "--json", cwd=tmp_path)
    assert ran.code == 1, ran.stderr  # the administrator's reset is refused
    passwords = [p for _, p, _ in sim.simulator.record.passwords]
    assert len(passwords) == 2  # ann and ben; sam is synced, ada an administrator
    streams = [r.stdout + r.stderr for r in (ran, reported, verified)]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert ledger in files and log in files and any(p.suffix == ".csv" for p in files)
    for password in passwords:
        for path in files:
            assert password.encode() not in path.read_bytes(), path
        for text in streams:
            assert password not in text


@pytest.mark.e2e  # the real command in a subprocess
def test_synced_users_are_skipped_and_counted(tmp_path: Path, simulator_factory: Any) -> None:
    sim, config, people = _tenant(tmp_path, simulator_factory)
    ledger = tmp_path / "l.sqlite"
    ran = _run(tmp_path, people, "-c", config, "--ledger", ledger, "--action", ACTION, "--json")
    summary = ran.json()
    reset = summary["result"]["actions"][ACTION]
    assert (reset["skipped"], reset["done"], reset["failed"]) == (1, 2, 1)
    assert "1 user synced from on-premises: reset-password skipped: reset it on-premises " in (
        ran.stderr
    )
    with sqlite3.connect(ledger) as db:
        (state, why), *_ = db.execute(
            "SELECT state, error_message FROM steps WHERE user_id = ?", (SAM.id,)
        ).fetchall()
    assert (state, why) == ("skipped", "reset it on-premises (or through password writeback)")
    assert SAM.id not in {uid for uid, _, _ in sim.simulator.record.passwords}


def test_each_user_is_disabled_then_reset_then_revoked_and_an_administrator_fails_alone(
    tmp_path: Path,
) -> None:
    users = tmp_path / "directory.json"  # PEOPLE, as _tenant serves them
    users.write_text(json.dumps([_graph(u) for u in PEOPLE]), encoding="utf-8")
    rig = Rig(tmp_path, FAST.model_copy(update={"directory_file": users}))  # the real job
    people = write_ids(tmp_path / "people.csv", [u.userPrincipalName for u in PEOPLE], "upn")
    ran = rig.run(people, ("revoke-sessions", ACTION, "disable"))  # asked in another order
    record = rig.record
    for user in (ANN, BEN):
        assert record.operations(user.id) == ["disable", "reset", "revoke"]
    assert record.operations(SAM.id) == ["disable", "revoke"]  # no reset: after the block
    reset = next(a for a in ran.actions if a.name == ACTION)
    assert reset.failed == 1  # ada: resetting an administrator needs a privileged role
    assert all(force for _, _, force in record.passwords)  # the user changes it next sign-in


@pytest.mark.e2e  # the real command in a subprocess
def test_passwords_out_writes_an_owner_only_csv_and_the_gate_warns(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim, config, people = _tenant(tmp_path, simulator_factory)
    sheet = tmp_path / "helpdesk" / "passwords.csv"
    sheet.parent.mkdir()
    args = (people, "-c", config, "--action", ACTION, "--passwords-out", sheet)
    planned = run_cli("run", "--dry-run", *args, cwd=tmp_path)
    assert planned.code == 0, planned.stderr
    assert f"--passwords-out {sheet}: each new password is written there in clear" in (
        planned.stderr
    )
    assert "cannot be undone" in planned.stderr
    assert not sheet.exists()  # a dry run writes nothing
    ran = _run(tmp_path, *args)
    assert ran.code == 1, ran.stderr  # ada's reset is refused
    if os.name == "posix":
        assert stat.S_IMODE(sheet.stat().st_mode) == 0o600
    rows = sheet.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "user_id,user_principal_name,action,state,password"
    written = {tuple(r.split(",")[:4]): r.split(",", 4)[4] for r in rows[1:]}
    received = {uid: p for uid, p, _ in sim.simulator.record.passwords}
    assert written == {
        (ANN.id, ANN.userPrincipalName, ACTION, "done"): received[ANN.id],
        (BEN.id, BEN.userPrincipalName, ACTION, "done"): received[BEN.id],
    }


@pytest.mark.e2e  # the real command in a subprocess
def test_passwords_out_is_refused_without_its_folder_or_without_reset_password(
    tmp_path: Path, simulator_factory: Any
) -> None:
    _, config, people = _tenant(tmp_path, simulator_factory)
    missing = tmp_path / "nowhere" / "p.csv"
    no_folder = _run(tmp_path, people, "-c", config, "--action", ACTION, "--passwords-out", missing)
    assert no_folder.code == 2
    assert f"the folder {missing.parent} does not exist" in no_folder.stderr
    no_reset = _run(tmp_path, people, "-c", config, "--passwords-out", tmp_path / "p.csv")
    assert no_reset.code == 2
    assert "--passwords-out is for reset-password, which this run does not do" in no_reset.stderr
    for refused in (no_folder, no_reset):
        said = refused.stderr.strip().splitlines()
        # which config and target are in force, then the one-line refusal
        assert (
            len(said) == 2 and said[0].startswith("config: ") and "Traceback" not in refused.stderr
        )
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "runs").exists()


@pytest.mark.e2e  # the real command in a subprocess
def test_undo_says_reset_password_cannot_be_undone_and_verify_reads_the_change_time(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim, config, people = _tenant(tmp_path, simulator_factory)
    ledger = tmp_path / "l.sqlite"
    ledger_in_process(sim.simulator, people, (ACTION,), ledger)  # the setup: the run itself
    undone = run_cli("undo", ledger, "-c", config, "--yes", cwd=tmp_path)
    assert undone.code == 2
    assert "reset-password: the old password is gone: a reset password stays reset" in (
        undone.stderr
    )
    out = tmp_path / "verify.csv"
    verified = run_cli("verify", ledger, "-c", config, "--json", "-o", out, cwd=tmp_path)
    reset = verified.json()["result"]["actions"][ACTION]
    assert (reset["checked"], reset["as_expected"]) == (2, 2)  # ada's failed: nothing to read
    assert "lastPasswordChangeDateTime at or after the request was sent" in out.read_text()


def test_a_new_password_has_all_four_kinds_and_its_secret_never_shows() -> None:
    passwords = {new_password() for _ in range(200)}
    assert len(passwords) == 200
    for password in passwords:
        assert len(password.reveal()) == 24
        assert all(any(c in kind for c in password.reveal()) for kind in KINDS)
        assert password.reveal()[0] not in "=+-@"  # a spreadsheet would read a formula
    secret = Secret("Hunter2!hunter2")
    shown = [str(secret), repr(secret), f"{secret}", f"{secret!r}", "%s" % secret]  # noqa: UP031
    assert all("Hunter2" not in text for text in shown)
    assert "Hunter2" not in str(ValueError(secret)) and "Hunter2" not in repr({"p": secret})
    assert json.loads(json.dumps({"p": secret})) == {"p": "Hunter2!hunter2"}
