"""What only the real command shows: exit codes and the line that says what to do next.

The behaviours behind them are tested in-process (tests/test_job_*.py); these few keep the
command's mapping of outcomes to exit codes honest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FAST, SAMPLES, expected_ids, run_cli, write_config, write_ids

pytestmark = pytest.mark.e2e
ANALYST = SAMPLES / "analyst_list.csv"


def test_failed_steps_exit_1_and_say_how_to_replay_and_verify_says_wait(
    tmp_path: Path, simulator_factory: Any
) -> None:
    bad = expected_ids(ANALYST, "ObjectId")[5]
    sim = simulator_factory(FAST.model_copy(update={"bad_ids": [bad], "processing_seconds": 3600}))
    config = write_config(tmp_path / "config.toml", sim.url)
    ledger = tmp_path / "l.sqlite"
    run = run_cli("run", "--yes", ANALYST, "-c", config, "--ledger", ledger, cwd=tmp_path)
    assert run.code == 1, run.stderr
    assert "1 step failed" in run.stderr and f"replay {ledger}" in run.stderr
    checked = run_cli("verify", ledger, "-c", config, cwd=tmp_path)
    assert checked.code == 1, checked.stderr
    assert "verify again in a while" in checked.stderr


def test_a_403_exits_3_naming_the_permission_and_how_to_resume(
    tmp_path: Path, simulator_factory: Any
) -> None:
    denied = simulator_factory(FAST.model_copy(update={"permission_denied": True}))
    config = write_config(tmp_path / "config.toml", denied.url)
    result = run_cli("run", "--yes", ANALYST, "-c", config, cwd=tmp_path)
    assert result.code == 3, result.stderr
    assert "IdentityRiskyUser.ReadWrite.All" in result.stderr
    assert "to resume once fixed:" in result.stderr
    assert "Traceback" not in result.stderr


def test_small_operator_mistakes_exit_2_in_one_line(tmp_path: Path, simulator: Any) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    write_ids(tmp_path / "ids.csv", ["8db8df93-edd5-4cd5-86b3-bc355166765c"])
    missing = run_cli("run", "--yes", "missing.csv", "-c", config, cwd=tmp_path)
    assert missing.code == 2 and "missing.csv: no such file" in missing.stderr
    assert len([ln for ln in missing.stderr.splitlines() if ln.strip()]) == 1
    folder = tmp_path / "ledgers"
    folder.mkdir()
    as_dir = run_cli("run", "--yes", "ids.csv", "-c", config, "--ledger", folder, cwd=tmp_path)
    assert as_dir.code == 2 and "is a directory; --ledger takes a file path" in as_dir.stderr
    port = run_cli("simulate", "--port", "99999", cwd=tmp_path)
    assert port.code == 2 and "Traceback" not in port.stderr
    typo = tmp_path / "typo.toml"
    typo.write_text("[send]\nrate_per_secnd = 2\n", encoding="utf-8")
    bad = run_cli("run", "--yes", "ids.csv", "-c", typo, cwd=tmp_path)
    assert bad.code == 2
    assert "[send] rate_per_secnd: unknown setting; did you mean 'rate_per_second'?" in bad.stderr
    secret_looking = tmp_path / "bad.toml"
    secret_looking.write_text('[auth]\ntenant_id = "Abc8Q~s3cretValue.xyz_"\n', encoding="utf-8")
    refused = run_cli("run", "ids.csv", "-c", secret_looking, cwd=tmp_path)
    assert refused.code == 2 and "[auth] tenant_id" in refused.stderr
    assert "s3cretValue" not in refused.stderr
    assert simulator.simulator.record.requests == 0
