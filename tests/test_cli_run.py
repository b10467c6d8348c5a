"""What only the real command shows: exit codes and the line that says what to do next.

The behaviours behind them are tested in-process (tests/test_job_*.py); these few keep the
command's mapping of outcomes to exit codes honest."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batcher.job.resolve import RESOLVE_COLUMNS
from tests.helpers import (
    BATCHER,
    FAST,
    SAMPLES,
    cli_env,
    counts,
    expected_ids,
    ids,
    ledger_in_process,
    run_cli,
    runs_of,
    write_config,
    write_ids,
)

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
    ledger = tmp_path / "l.sqlite"
    result = run_cli("run", "--yes", ANALYST, "-c", config, "--ledger", ledger, cwd=tmp_path)
    assert result.code == 3, result.stderr
    assert "IdentityRiskyUser.ReadWrite.All" in result.stderr
    assert "to resume once fixed:" in result.stderr
    assert "Traceback" not in result.stderr
    checked = run_cli("verify", ledger, "-c", config, cwd=tmp_path)  # nothing was applied
    assert checked.code == 1, checked.stderr
    assert "nothing to verify: 45 steps not sent yet; resume first" in checked.stderr
    # the run read who was already confirmed (a read is allowed) before its refused confirm;
    # verify read nothing
    assert denied.simulator.record.reads == 1


@pytest.mark.posix  # a real SIGINT to the process
def test_a_stopped_verify_says_who_it_did_not_read_and_the_command_that_finishes(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(FAST.model_copy(update={"processing_seconds": 3600}))
    config = write_config(tmp_path / "config.toml", sim.url)
    ledger = tmp_path / "l.sqlite"
    people = write_ids(tmp_path / "ids.csv", ids(30))
    ledger_in_process(sim.simulator, people, ("confirm",), ledger)  # the setup: the run
    write_config(config, sim.url, send={"rate_per_second": 0.1})  # a read every 10 s
    record = sim.simulator.record
    run_reads = record.reads  # the run read who was already confirmed
    proc = subprocess.Popen(
        [BATCHER, "verify", str(ledger), "-c", str(config)],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # verify's first list; the next waits its turn
    assert record.wait_for_reads(run_reads + 1, timeout=60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert re.search(r"not read\s.*30", err), err
    printed = re.search(r"30 users were not read; to finish the check: (.+)$", err, re.M)
    assert printed and printed.group(1).endswith("--unread"), err
    write_config(config, sim.url)  # the usual pace again
    finished = subprocess.run(
        printed.group(1),
        shell=True,
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert finished.returncode == 1, finished.stderr  # read now: still processing, not "done"
    assert re.search(r"still processing.*30", finished.stderr), finished.stderr
    assert "were not read" not in finished.stderr


def test_small_operator_mistakes_exit_2_in_one_line(tmp_path: Path, simulator: Any) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    write_ids(tmp_path / "ids.csv", ["8db8df93-edd5-4cd5-86b3-bc355166765c"])
    missing = run_cli("run", "--yes", "missing.csv", "-c", config, cwd=tmp_path)
    assert missing.code == 2 and "missing.csv: no such file" in missing.stderr
    said = [ln for ln in missing.stderr.splitlines() if ln.strip()]
    assert len(said) == 2 and said[0].startswith("config: ")  # which config, then one line
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
    notes = tmp_path / "notes.txt"
    notes.write_text("not a ledger\n", encoding="utf-8")
    report = run_cli("report", notes, "--out", tmp_path / "r.csv", cwd=tmp_path)
    assert report.code == 2 and "not a batcher ledger" in report.stderr, report.stderr
    assert "--ledger" not in report.stderr  # `report` takes the ledger as its argument
    assert notes.read_text(encoding="utf-8") == "not a ledger\n"
    assert simulator.simulator.record.requests == 0


PHISHING = SAMPLES / "phishing_recipients.csv"


def test_a_403_on_look_up_exits_3_naming_the_read_permission_and_writes_nothing(
    tmp_path: Path, simulator_factory: Any
) -> None:
    denied = simulator_factory(FAST.model_copy(update={"directory_read_denied": True}))
    config = write_config(tmp_path / "config.toml", denied.url)
    ledger = tmp_path / "l.sqlite"
    result = run_cli(
        "run", "--yes", PHISHING, "-c", config, "--contain", "--ledger", ledger, cwd=tmp_path
    )
    assert result.code == 3, result.stderr
    assert "User.Read.All" in result.stderr and "Directory Readers" in result.stderr
    assert "Traceback" not in result.stderr
    record = denied.simulator.record
    assert record.writes == [] and record.accepted["confirmCompromised"] == []
    assert runs_of(ledger) == []  # no run and no step recorded before the look-up finishes
    assert all(per == {} for per in counts(ledger).values())


def test_a_403_for_every_user_on_disable_exits_3_naming_its_permission(
    tmp_path: Path, simulator_factory: Any
) -> None:
    denied = simulator_factory(FAST.model_copy(update={"directory_write_denied": True}))
    config = write_config(tmp_path / "config.toml", denied.url)
    write_ids(tmp_path / "ids.csv", ids(200))
    ledger = tmp_path / "l.sqlite"
    result = run_cli(
        "run",
        "--yes",
        "--max-users",
        "100000",
        "ids.csv",
        "-c",
        config,
        "--action",
        "disable",
        "--ledger",
        ledger,
        cwd=tmp_path,
    )
    assert result.code == 3, result.stderr
    assert "User.EnableDisableAccount.All" in result.stderr
    assert "to resume once fixed:" in result.stderr
    refused = [w for w in denied.simulator.record.writes if w.status == 403]
    assert 20 <= len(refused) <= 4 * 20  # stopped with at most the 4 batches in flight sent
    assert counts(ledger)["disable"]["planned"] >= 120  # the rest wait for the same command
    assert counts(ledger)["disable"].get("done", 0) == 0


def test_resolve_looks_up_only_and_writes_the_table_it_is_asked_for(
    tmp_path: Path, simulator: Any
) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    out = tmp_path / "table.parquet"
    result = run_cli("resolve", PHISHING, "-c", config, "--out", out, "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    found = result.json()["result"]
    assert found["out"] == str(out)
    assert {
        k: found["inputs"][k] for k in ("looked_up", "resolved", "not_found", "ambiguous", "guests")
    } == {
        "looked_up": 58,
        "resolved": 57,
        "not_found": 0,
        "ambiguous": 0,
        "guests": 1,
    }
    table = pl.read_parquet(out)
    assert table.columns == RESOLVE_COLUMNS  # as in tests/test_job_identities.py, from Parquet
    assert table.height == 58 and table["outcome"].value_counts().sort("outcome").rows() == [
        ("guest", 1),
        ("resolved", 57),
    ]
    record = simulator.simulator.record
    assert record.batches >= 1 and record.writes == []  # read-only: no write, no gate
    assert record.accepted["confirmCompromised"] == []
