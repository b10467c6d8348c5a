"""--since is one incident window through the real CLI: the sign-ins it finds and the sign-in
methods it keeps use the same start, recorded once; a sign-in window past 30 days is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FAST, run_cli, write_config

WINDOW = FAST.model_copy(
    update={
        "sign_ins": {"203.0.113.7": 2},
        "reports_per_second": 50.0,
        "reports_burst": 50,
    }
)
BUDGETS = {"reports_per_window": 50, "reports_window_seconds": 1.0}
START = "2026-11-22T00:00:00Z"
pytestmark = pytest.mark.e2e  # the real CLI in a subprocess


def _run(tmp_path: Path, server: Any, *args: str) -> Any:
    config = write_config(tmp_path / "config.toml", server.url, budgets=BUDGETS)
    return run_cli(
        "run", *args, "--config", config, "--ledger", tmp_path / "l.sqlite", "--yes",
        cwd=tmp_path,
    )  # fmt: skip


def test_one_since_drives_the_sign_ins_found_and_the_methods_the_remediation_keeps(
    tmp_path: Path, simulator_factory: Any
) -> None:
    server = simulator_factory(WINDOW)
    done = _run(
        tmp_path, server, "--signed-in-from", "203.0.113.7", "--since", START,
        "--remediate",
    )  # fmt: skip
    assert done.code == 0, done.stderr
    said = done.stdout + done.stderr
    assert f"2 successful sign-ins since {START}" in said  # the sign-ins' window
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        since = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'since%'").fetchall())
        kept = [r for (r,) in db.execute("SELECT reason FROM items WHERE state = 'kept'")]
    assert since["since"].startswith("2026-11-22T00:00:00")  # recorded once, for a resume
    # the methods' window is the same start: older methods are kept, and say so
    assert any(f"before {START}" in (reason or "") for reason in kept)
    assert server.simulator.auth_methods.deleted  # the newer ones were removed


def test_a_sign_in_window_past_the_30_days_the_logs_keep_is_refused_in_one_line(
    tmp_path: Path, simulator_factory: Any
) -> None:
    server = simulator_factory(WINDOW)
    refused = _run(tmp_path, server, "--signed-in-from", "203.0.113.7", "--since", "40d")
    assert refused.code == 2
    errors = [line for line in refused.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "30 days" in errors[0]
    assert not server.simulator.record.statuses  # no request at all
