"""remove-auth-methods through the real CLI, on a simulator on a real port."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.helpers import FAST, run_cli, write_config, write_ids

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


def test_every_method_but_the_password_is_deleted_once_the_default_phone_last(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim, ledger = _run(tmp_path, simulator_factory)
    deleted = [m for _, m in sim.simulator.auth_methods.deleted]
    assert len(deleted) == len(set(deleted)) >= 3
    assert deleted[-1].startswith("phone-")
    states = {kind: (state, reason) for _, kind, state, reason in _items(ledger)}
    assert states.pop("password")[0] == "kept"
    assert {state for state, _ in states.values()} == {"done"}


def test_since_keeps_the_methods_registered_before_it_and_says_why(
    tmp_path: Path, simulator_factory: Any
) -> None:
    _, ledger = _run(tmp_path, simulator_factory, "--since", "2026-11-22T00:00:00Z")
    kept = {kind: reason for _, kind, state, reason in _items(ledger) if state == "kept"}
    assert "before 2026-11-22T00:00:00Z" in kept["microsoftAuthenticator"]
    assert "no registration time" in kept["phone"]
    done = [kind for _, kind, state, _ in _items(ledger) if state == "done"]
    assert "email" in done and "microsoftAuthenticator" not in done
