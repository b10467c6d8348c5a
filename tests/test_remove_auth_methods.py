"""remove-auth-methods through the real CLI, on a simulator on a real port; what is about
Graph and the ledger alone (the deletes' order, verify's list) in-process, with the real job."""

from __future__ import annotations

import csv
import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FAST, Rig, cli_env, ledger_in_process, run_cli, write_config, write_ids

FAST_REPORTS = FAST.model_copy(update={"reports_per_second": 50.0, "reports_burst": 50})
BUDGETS = {"reports_per_window": 50, "reports_window_seconds": 1.0}


def _items(ledger: Path) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(ledger) as db:
        return db.execute(
            "SELECT item_id, kind, state, reason FROM items ORDER BY rowid"
        ).fetchall()


def _run(tmp_path: Path, simulator_factory: Any, *args: str) -> tuple[Any, Path]:
    sim = simulator_factory(FAST_REPORTS)
    config = write_config(tmp_path / "config.toml", sim.url, budgets=BUDGETS)
    people = write_ids(tmp_path / "people.csv", ["ann@contoso.com"], "upn")
    ledger = tmp_path / "l.sqlite"
    result = run_cli(
        "run",
        "--yes",
        people,
        "-c",
        config,
        "--action",
        "remove-auth-methods",
        "--ledger",
        ledger,
        *args,
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    return sim, ledger


def _removed_before(tmp_path: Path, simulator_factory: Any) -> tuple[Any, Path]:
    """The same run as ``_run``, made in-process: the setup of a test about a later command."""
    sim = simulator_factory(FAST_REPORTS)
    write_config(tmp_path / "config.toml", sim.url, budgets=BUDGETS)
    people = write_ids(tmp_path / "people.csv", ["ann@contoso.com"], "upn")
    ledger = tmp_path / "l.sqlite"
    ledger_in_process(sim.simulator, people, ("remove-auth-methods",), ledger, budgets=BUDGETS)
    assert len(sim.simulator.auth_methods.deleted) >= 3
    return sim, ledger


def _removed_in_process(tmp_path: Path) -> tuple[Rig, Path]:
    """The run of ``_run``, with the real job and the simulator in-process (no CLI surface is
    asserted): the rig and the ledger."""
    rig = Rig(tmp_path, FAST_REPORTS, budgets=BUDGETS)
    people = write_ids(tmp_path / "people.csv", ["ann@contoso.com"], "upn")
    ledger = tmp_path / "l.sqlite"
    ran = rig.run(people, ("remove-auth-methods",), ledger)
    assert (ran.stopped, ran.failed, ran.unknown) == (None, 0, 0)
    return rig, ledger


def test_every_method_but_the_password_is_deleted_once_the_default_phone_last(
    tmp_path: Path,
) -> None:
    rig, ledger = _removed_in_process(tmp_path)
    deleted = [m for _, m in rig.sim.auth_methods.deleted]
    assert len(deleted) == len(set(deleted)) >= 3
    assert deleted[-1].startswith("phone-")
    states = {kind: (state, reason) for _, kind, state, reason in _items(ledger)}
    assert states.pop("password")[0] == "kept"
    assert {state for state, _ in states.values()} == {"done"}


@pytest.mark.e2e  # the real command in a subprocess
def test_since_keeps_the_methods_registered_before_it_and_says_why(
    tmp_path: Path, simulator_factory: Any
) -> None:
    _, ledger = _run(tmp_path, simulator_factory, "--since", "2026-11-22T00:00:00Z")
    kept = {kind: reason for _, kind, state, reason in _items(ledger) if state == "kept"}
    assert "before 2026-11-22T00:00:00Z" in kept["microsoftAuthenticator"]
    assert "no registration time" in kept["phone"]
    done = [kind for _, kind, state, _ in _items(ledger) if state == "done"]
    assert "email" in done and "microsoftAuthenticator" not in done


def _killed_then_resumed(
    tmp_path: Path, simulator_factory: Any, failpoint: str
) -> tuple[Any, Path, str]:
    """A run SIGKILLed at ``failpoint``, then the same command again: (simulator, ledger, the
    resume's stdout)."""
    sim = simulator_factory(FAST_REPORTS)
    config = write_config(tmp_path / "config.toml", sim.url, budgets=BUDGETS)
    people = write_ids(tmp_path / "people.csv", ["ann@contoso.com"], "upn")
    ledger = tmp_path / "l.sqlite"
    # --include-admins: no role listings before the send, so the requests are the look-up,
    # the list, then each delete (a failpoint counts them)
    command = (
        "run", "--yes", people, "-c", config, "--action", "remove-auth-methods",
        "--include-admins",
    )  # fmt: skip
    killed = run_cli(
        *command, "--ledger", ledger, cwd=tmp_path, env=cli_env(BATCHER_FAILPOINT=failpoint)
    )
    assert killed.code == -signal.SIGKILL, killed.stderr
    resumed = run_cli(*command, "--ledger", ledger, "--json", cwd=tmp_path)
    assert resumed.code == 0, resumed.stderr
    return sim, ledger, resumed.stdout


@pytest.mark.e2e  # the real command in a subprocess
@pytest.mark.posix
def test_a_run_killed_between_list_and_delete_resumes_without_listing_again(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim, ledger, _ = _killed_then_resumed(tmp_path, simulator_factory, "items.listed")
    methods = sim.simulator.auth_methods
    assert methods.lists == 1  # the resume acted on the list the killed run recorded
    deleted = [m for _, m in methods.deleted]
    assert len(deleted) == len(set(deleted)) >= 3
    assert {state for _, kind, state, _ in _items(ledger) if kind != "password"} == {"done"}


@pytest.mark.e2e  # the real command in a subprocess
@pytest.mark.posix
def test_a_delete_answered_but_not_recorded_is_in_doubt_on_resume_and_never_deleted_twice(
    tmp_path: Path, simulator_factory: Any
) -> None:
    # the look-up, then the list, then the first delete: killed once Graph answered
    # it, before the answer was recorded; the resume finds the item 'sending' (recovered to
    # unknown), sends it again, and Graph says it is gone
    sim, ledger, _ = _killed_then_resumed(tmp_path, simulator_factory, "send.after_answer:3")
    methods = sim.simulator.auth_methods
    assert methods.lists == 1
    deleted = [m for _, m in methods.deleted]
    assert len(deleted) == len(set(deleted)) >= 3
    states = [state for _, kind, state, _ in _items(ledger) if kind != "password"]
    assert states.count("gone") == 1 and set(states) == {"done", "gone"}


@pytest.mark.e2e  # the real command in a subprocess
def test_the_report_shows_each_method_kept_or_removed_with_its_before_image(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim, ledger = _removed_before(tmp_path, simulator_factory)
    out = tmp_path / "report.csv"
    assert run_cli("report", ledger, "--out", out, cwd=tmp_path).code == 0
    row = next(r for r in csv.DictReader(out.open(encoding="utf-8")))
    items = json.loads(row["items"])
    kinds = {i["kind"]: i for i in items}
    assert (
        kinds["password"]["state"] == "kept" and "cannot be deleted" in kinds["password"]["reason"]
    )
    phone = kinds["phone"]
    assert phone["state"] == "done"
    assert phone["phoneNumber"].startswith("*") and "425555" not in phone["phoneNumber"]
    assert len(items) == len(sim.simulator.auth_methods.deleted) + 1


def test_verify_lists_the_methods_again_and_finds_each_removed_one_absent(
    tmp_path: Path,
) -> None:
    rig, ledger = _removed_in_process(tmp_path)
    verified = rig.verify(ledger)
    assert verified.nothing_to_verify is None and not verified.interrupted
    assert rig.sim.auth_methods.lists == 2  # the run's list, and verify's
    rows = list(csv.DictReader((tmp_path / "l.verify.csv").open(encoding="utf-8")))
    assert [r["verify_status"] for r in rows] == ["removed"]
    assert rows[0]["observed"].startswith(f"{len(rig.sim.auth_methods.deleted)} absent")


@pytest.mark.e2e  # the real command in a subprocess
def test_verify_refused_the_list_reports_nothing_as_read_and_names_the_permission(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim, ledger = _removed_before(tmp_path, simulator_factory)
    methods = sim.simulator.auth_methods
    methods.refused = {u for u, _ in methods.deleted}  # the permission taken away since
    config = tmp_path / "config.toml"
    result = run_cli("verify", ledger, "-c", config, "--json", cwd=tmp_path)
    envelope = json.loads(result.stdout)
    assert result.code != 0 and not envelope["ok"]
    assert "UserAuthenticationMethod.ReadWrite.All" in envelope["error"]["message"]
    assert not (tmp_path / "l.verify.csv").exists()  # nothing read: nothing reported as read
