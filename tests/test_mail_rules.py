"""disable-mail-rules and its undo through the real CLI, on a simulator on a real port."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from batcher.simulator.mailrules import has_mailbox
from tests.helpers import run_cli, write_config, write_ids

pytestmark = pytest.mark.e2e  # the real command in a subprocess

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


def test_undo_re_enables_exactly_the_rules_the_run_disabled(tmp_path: Path, simulator: Any) -> None:
    ledger = _disable(tmp_path, simulator)
    rules = simulator.simulator.mail_rules
    lists = rules.lists
    config = tmp_path / "config.toml"
    result = run_cli("undo", ledger, "--yes", "-c", config, cwd=tmp_path)
    assert result.code == 0, result.stderr
    enabled = [(u, r) for u, r, on in rules.changed if on]
    assert sorted(enabled) == sorted((u, _rule(u, n)) for u in WITH_MAILBOX for n in HARMFUL)
    assert rules.lists == lists  # the undo acts on the ledger's rules: it lists none again
    assert not rules.of(WITH_MAILBOX[0])[6]["isEnabled"]  # disabled before the run: stays


def test_verify_reads_the_rules_again(tmp_path: Path, simulator: Any) -> None:
    ledger = _disable(tmp_path, simulator)
    result = run_cli("verify", ledger, "-c", tmp_path / "config.toml", cwd=tmp_path)
    assert result.code == 0, result.stderr
    report = (tmp_path / "l.verify.csv").read_text(encoding="utf-8")
    assert report.count(",disabled,") == len(WITH_MAILBOX)
