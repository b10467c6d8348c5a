"""Starting the CLI costs only what the command uses: `--help` and `status` load no polars, no
httpx and not the built-in simulator (uvicorn, starlette); Python itself says what was imported."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from batcher.actions import DEFAULT_ACTION
from batcher.ledger import Ledger, RunRecord, RunScope
from tests.helpers import cli_env, run_cli

pytestmark = pytest.mark.e2e

HEAVY = {"polars", "httpx", "uvicorn", "starlette", "batcher.simulator"}


def _imported(stderr: str) -> set[str]:
    """The modules the process imported, as PYTHONPROFILEIMPORTTIME (-X importtime) lists them."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


def _heavy(names: set[str]) -> set[str]:
    return {n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY)}


def test_help_and_status_start_without_polars_httpx_or_the_simulator(tmp_path: Path) -> None:
    ledger = tmp_path / "incident.sqlite"
    scope = RunScope(actions=(DEFAULT_ACTION,), tenant="t", cloud="global", api_version="v1.0")
    book = Ledger.open(ledger, scope)
    book.begin_run(RunRecord("run", "d" * 64, command_line="batcher run ids.csv", cwd="."))
    book.add_users(pl.DataFrame({"user_id": ["u1", "u2"]}))
    book.add_steps(DEFAULT_ACTION, pl.Series(["u1", "u2"]))
    book.close()
    env = cli_env(PYTHONPROFILEIMPORTTIME="1")

    helped = run_cli("--help", cwd=tmp_path, env=env)
    told = run_cli("status", ledger, cwd=tmp_path, env=env)

    assert helped.code == 0 and "status" in helped.stdout
    assert told.code == 0 and "planned" in told.stderr, told.stderr
    for result in (helped, told):
        loaded = _imported(result.stderr)
        assert {"typer", "batcher.cli.commands"} <= loaded  # the list is read, not empty
        assert _heavy(loaded) == set()
    assert "batcher.job.status" in _imported(told.stderr)
