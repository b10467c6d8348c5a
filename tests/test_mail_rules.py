"""disable-mail-rules and its undo through the real CLI, on a simulator on a real port; what
is about Graph and the ledger alone (paging, verify's reads) in-process, with the real job."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from batcher.simulator.mailrules import has_mailbox
from tests.helpers import FAST, Rig, ledger_in_process, run_cli, write_config, write_ids

IDS = [str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(20)]
WITH_MAILBOX = [u for u in IDS if has_mailbox(u)]
WITHOUT = [u for u in IDS if not has_mailbox(u)]
# the simulator's rules per mailbox (simulator/mailrules.py): 0-2 are system rules; 3 forwards,
# 4 hides mail in RSS Feeds, 5 deletes; 6 is disabled already, 7 files newsletters, 8 flags
HARMFUL = (3, 4, 5)


def _rule(user_id: str, n: int) -> str:
    return f"rule-{user_id[:8]}-{n}"


def _disable(tmp_path: Path, simulator: Any) -> Path:
    assert WITH_MAILBOX and WITHOUT  # both kinds of user are in the input
    config = write_config(tmp_path / "config.toml", simulator.url)
    people = write_ids(tmp_path / "people.csv", IDS)
    ledger = tmp_path / "l.sqlite"
    result = run_cli(
        "run", "--yes", people, "-c", config, "--action", "disable-mail-rules",
        "--ledger", ledger, cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    return ledger


def _disabled_before(tmp_path: Path, simulator: Any) -> Path:
    """The same run as ``_disable``, made in-process: the setup of a test about a later command."""
    write_config(tmp_path / "config.toml", simulator.url)
    people = write_ids(tmp_path / "people.csv", IDS)
    ledger = tmp_path / "l.sqlite"
    ledger_in_process(simulator.simulator, people, ("disable-mail-rules",), ledger)
    assert len(simulator.simulator.mail_rules.changed) == len(WITH_MAILBOX) * len(HARMFUL)
    return ledger


@pytest.mark.e2e  # the real command in a subprocess
def test_only_matching_rules_are_disabled_and_system_rules_are_never_touched(
    tmp_path: Path, simulator: Any
) -> None:
    ledger = _disable(tmp_path, simulator)
    changed = simulator.simulator.mail_rules.changed
    assert sorted(changed) == sorted((u, _rule(u, n), False) for u in WITH_MAILBOX for n in HARMFUL)
    with sqlite3.connect(ledger) as db:
        kept = dict(
            db.execute(
                "SELECT item_id, reason FROM items WHERE state = 'kept' AND user_id = ?",
                (WITH_MAILBOX[0],),
            ).fetchall()
        )
        skipped = db.execute(
            "SELECT user_id, error_message FROM steps WHERE state = 'skipped'"
        ).fetchall()
        before = db.execute(
            "SELECT before FROM items WHERE item_id = ?", (_rule(WITH_MAILBOX[0], 3),)
        ).fetchone()[0]
    u = WITH_MAILBOX[0]
    assert (
        kept[_rule(u, 0)]
        == kept[_rule(u, 1)]
        == kept[_rule(u, 2)]
        == ("a system rule: never touched")
    )
    assert kept[_rule(u, 6)] == "already disabled"
    assert "drop@attacker.example" in before and '"isEnabled": true' in before
    assert sorted(uid for uid, _ in skipped) == sorted(WITHOUT)
    assert all("no Exchange Online mailbox" in why for _, why in skipped)


@pytest.mark.e2e  # the real command in a subprocess
def test_undo_re_enables_exactly_the_rules_the_run_disabled(tmp_path: Path, simulator: Any) -> None:
    ledger = _disabled_before(tmp_path, simulator)
    rules = simulator.simulator.mail_rules
    lists = rules.lists
    config = tmp_path / "config.toml"
    result = run_cli("undo", ledger, "--yes", "-c", config, cwd=tmp_path)
    assert result.code == 0, result.stderr
    enabled = [(u, r) for u, r, on in rules.changed if on]
    assert sorted(enabled) == sorted((u, _rule(u, n)) for u in WITH_MAILBOX for n in HARMFUL)
    assert rules.lists == lists  # the undo acts on the ledger's rules: it lists none again
    assert not rules.of(WITH_MAILBOX[0])[6]["isEnabled"]  # disabled before the run: stays


def test_verify_reads_the_rules_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path)  # the real job, the simulator in-process: no CLI surface is asserted
    people = write_ids(tmp_path / "people.csv", IDS)
    ledger = tmp_path / "l.sqlite"
    ran = rig.run(people, ("disable-mail-rules",), ledger)
    assert (ran.stopped, ran.failed, ran.unknown) == (None, 0, 0)
    rules = rig.sim.mail_rules
    lists = rules.lists
    verified = rig.verify(ledger)
    assert verified.nothing_to_verify is None and not verified.interrupted
    assert rules.lists == lists + len(WITH_MAILBOX)  # each mailbox's rules listed again
    report = (tmp_path / "l.verify.csv").read_text(encoding="utf-8")
    assert report.count(",disabled,") == len(WITH_MAILBOX)


def _run(tmp_path: Path, simulator: Any, *extra: str, ids: list[str] = IDS) -> Any:
    config = write_config(tmp_path / "config.toml", simulator.url)
    people = write_ids(tmp_path / "people.csv", ids)
    return run_cli(
        "run", "--yes", people, "-c", config, "--action", "disable-mail-rules",
        "--ledger", tmp_path / "l.sqlite", *extra, cwd=tmp_path,
    )  # fmt: skip


def _first_run(tmp_path: Path, simulator: Any, *, all_rules: bool) -> None:
    """The ledger's first run (``--all-rules`` or not), made in-process: the setup of a test
    about the resume, which runs at the real CLI."""
    people = write_ids(tmp_path / "people.csv", WITH_MAILBOX[:2])
    options = {"all_rules": all_rules}
    ledger_in_process(
        simulator.simulator, people, ("disable-mail-rules",), tmp_path / "l.sqlite", options=options
    )
    assert simulator.simulator.mail_rules.changed  # it disabled rules


def _one_error_line(stderr: str) -> bool:
    """The error is one line, the last, and no traceback."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("batcher: error:")]
    return len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in stderr


@pytest.mark.e2e  # the real command in a subprocess
def test_all_rules_disables_harmless_rules_too_and_never_system_rules(
    tmp_path: Path, simulator: Any
) -> None:
    result = _run(tmp_path, simulator, "--all-rules")
    assert result.code == 0, result.stderr
    said = " ".join(result.stderr.split())  # the plan and the gate say it (wrapped)
    assert "--all-rules: every enabled inbox rule is disabled, harmless ones too" in said
    # 7 files newsletters, 8 flags: harmless, disabled too; 0-2 (system) and 6 (off) untouched
    every = (3, 4, 5, 7, 8)
    changed = simulator.simulator.mail_rules.changed
    assert sorted(changed) == sorted((u, _rule(u, n), False) for u in WITH_MAILBOX for n in every)
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        recorded = db.execute("SELECT value FROM meta WHERE key = 'all_rules'").fetchone()
        reasons = dict(
            db.execute(
                "SELECT item_id, reason FROM items WHERE user_id = ?", (WITH_MAILBOX[0],)
            ).fetchall()
        )
    assert recorded == ("yes",)
    assert reasons[_rule(WITH_MAILBOX[0], 0)] == "a system rule: never touched"


@pytest.mark.e2e  # the real command in a subprocess
def test_a_resume_that_picks_rules_the_other_way_is_refused_in_one_line(
    tmp_path: Path, simulator: Any
) -> None:
    _first_run(tmp_path, simulator, all_rules=True)
    changed = list(simulator.simulator.mail_rules.changed)
    without = _run(tmp_path, simulator, ids=WITH_MAILBOX[:2])
    assert without.code != 0
    assert "this ledger's first run gave --all-rules" in without.stderr
    assert _one_error_line(without.stderr), without.stderr
    assert simulator.simulator.mail_rules.changed == changed  # nothing sent


@pytest.mark.e2e  # the real command in a subprocess
def test_a_first_run_without_all_rules_refuses_it_on_resume(tmp_path: Path, simulator: Any) -> None:
    _first_run(tmp_path, simulator, all_rules=False)
    again = _run(tmp_path, simulator, "--all-rules", ids=WITH_MAILBOX[:2])
    assert again.code != 0
    assert "--all-rules differs from this ledger's first run" in again.stderr
    assert _one_error_line(again.stderr), again.stderr


@pytest.mark.e2e  # the real command in a subprocess
def test_all_rules_without_an_action_that_picks_rules_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", "http://127.0.0.1:9")
    people = write_ids(tmp_path / "people.csv", IDS[:2])
    result = run_cli("run", "--yes", people, "-c", config, "--all-rules", cwd=tmp_path)
    assert result.code != 0
    assert "--all-rules is for disable-mail-rules" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_matching_rule_of_a_30_rule_mailbox_listed_in_pages_of_10_is_disabled(
    tmp_path: Path,
) -> None:
    # the real job and verify, the simulator in-process: paging is no part of the CLI's surface
    rig = Rig(tmp_path, FAST.model_copy(update={"mail_rules": 30, "mail_rules_page_size": 10}))
    users = WITH_MAILBOX[:3]
    ledger = tmp_path / "l.sqlite"
    ran = rig.run(write_ids(tmp_path / "people.csv", users), ("disable-mail-rules",), ledger)
    assert (ran.stopped, ran.failed, ran.unknown) == (None, 0, 0)
    assert [(a.name, a.done) for a in ran.actions] == [("disable-mail-rules", len(users))]
    rules = rig.sim.mail_rules
    # beyond the first nine: a forward, a delete, a harmless flag in turn (n % 3 == 2 harmless)
    matching = (*HARMFUL, *(n for n in range(9, 30) if n % 3 != 2))
    assert sorted(rules.changed) == sorted((u, _rule(u, n), False) for u in users for n in matching)
    assert rules.lists == 3 * len(users)  # three pages each
    verified = rig.verify(ledger)
    assert verified.nothing_to_verify is None and not verified.interrupted
    assert rules.lists == 2 * 3 * len(users)  # verify read the three pages again
    report = (tmp_path / "l.verify.csv").read_text(encoding="utf-8")
    assert report.count(",disabled,") == len(users)
    assert "still_enabled" not in report  # a rule on page 3 was read too, not assumed
