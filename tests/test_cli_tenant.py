"""A ledger is named by its tenant: the settings', the token's (a JWT's tid), or, for a token
that says none, the one Graph names at sign-in (GET /organization), never a made-up name."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from batcher.cli.edge import EXIT_AUTH
from batcher.ledger import Ledger
from batcher.simulator import SIMULATED_TENANT
from tests.helpers import cli_env, ids, run_cli, sim_settings, write_config, write_ids

pytestmark = pytest.mark.e2e
OTHER_TENANT = "22222222-3333-4444-8555-666666666666"
NOWHERE = "http://127.0.0.1:9"  # nothing listens: a request would fail the command


def _jwt(tid: str) -> str:
    """An unsigned JWT (batcher reads its tid claim without verifying; labelling only)."""
    part = base64.urlsafe_b64encode(json.dumps({"tid": tid}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJub25lIn0.{part}.sig"


def _ledgers(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "runs").glob("*.sqlite"))


def _tenant_of(ledger: Path) -> str | None:
    reader = Ledger.open_existing(ledger)
    try:
        return reader.meta().get("tenant")
    finally:
        reader.close()


def test_a_token_that_is_not_a_jwt_names_the_ledger_by_the_tenant_graph_names_at_sign_in(
    tmp_path: Path, simulator: Any
) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url, auth={})
    write_ids(tmp_path / "ids.csv", ids(5))
    first = run_cli("run", "--yes", "ids.csv", "--config", config, cwd=tmp_path)
    assert first.code == 0, first.stderr
    record = simulator.simulator.record
    assert record.tenant_reads == 1  # one GET /organization, before the ledger was chosen
    [ledger] = _ledgers(tmp_path)
    assert ledger.name.startswith(f"ids-confirm-{SIMULATED_TENANT[:8]}-")
    assert _tenant_of(ledger) == SIMULATED_TENANT
    assert "token-tenant" not in first.stdout + first.stderr
    again = run_cli("run", "--yes", "ids.csv", "--config", config, "--json", cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert again.json()["result"]["ledger"] == str(ledger)  # the same ledger, found again
    assert _ledgers(tmp_path) == [ledger] and record.tenant_reads == 2


def test_a_jwt_or_tenant_id_names_the_ledger_without_a_request(tmp_path: Path) -> None:
    write_ids(tmp_path / "ids.csv", ids(3))
    by_token = write_config(tmp_path / "token.toml", NOWHERE, auth={})
    env = cli_env(BATCHER_ACCESS_TOKEN=_jwt(OTHER_TENANT))
    plan = run_cli("run", "--dry-run", "ids.csv", "--config", by_token, cwd=tmp_path, env=env)
    assert plan.code == 0, plan.stderr
    assert f"ids-confirm-{OTHER_TENANT[:8]}-" in plan.stderr
    by_config = write_config(tmp_path / "id.toml", NOWHERE, auth={"tenant_id": SIMULATED_TENANT})
    plan = run_cli("run", "--dry-run", "ids.csv", "--config", by_config, cwd=tmp_path)
    assert plan.code == 0, plan.stderr
    assert f"ids-confirm-{SIMULATED_TENANT[:8]}-" in plan.stderr


def test_the_offline_dry_run_says_the_ledger_is_named_once_signed_in(tmp_path: Path) -> None:
    write_ids(tmp_path / "ids.csv", ids(3))
    config = write_config(tmp_path / "config.toml", NOWHERE, auth={})
    env = {k: v for k, v in cli_env().items() if k != "BATCHER_ACCESS_TOKEN"}
    plan = run_cli("run", "--dry-run", "ids.csv", "--config", config, cwd=tmp_path, env=env)
    assert plan.code == 0, plan.stderr
    assert "ledger:  chosen at sign-in" in plan.stderr
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_a_refused_tenant_read_stops_before_any_ledger_and_says_what_to_set(
    tmp_path: Path, simulator_factory: Any
) -> None:
    simulator = simulator_factory(sim_settings(directory_read_denied=True))
    config = write_config(tmp_path / "config.toml", simulator.url, auth={})
    write_ids(tmp_path / "ids.csv", ids(3))
    proc = run_cli("run", "--yes", "ids.csv", "--config", config, cwd=tmp_path)
    assert proc.code == EXIT_AUTH, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Organization.Read.All" in errors[0], proc.stderr
    assert "tenant_id" in errors[0] and "Traceback" not in proc.stderr
    assert _ledgers(tmp_path) == []  # no ledger under a guessed name
    assert simulator.simulator.record.accepted["confirmCompromised"] == []
