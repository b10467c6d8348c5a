"""What a new user meets first through the real CLI: long pasted lists, clones, ./config.toml,
the recent-runs note, the live rate, one --json schema, SIGTERM, --out, look-ups from the ledger."""

from __future__ import annotations

import io
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from batcher.cli.progress import RunProgress
from batcher.cli.schema import Envelope
from batcher.control import Tally
from batcher.eventlog import Event
from batcher.simulator import GraphSimulator
from tests.helpers import (
    BATCHER,
    FAST,
    REPO,
    TEST_TOKEN,
    Rig,
    cli_env,
    ids,
    ledger_in_process,
    run_cli,
    write_config,
    write_ids,
)


def _sim_env(tmp_path: Path) -> dict[str, str]:
    return cli_env(BATCHER_ACCESS_TOKEN="", XDG_DATA_HOME=str(tmp_path / "data"))


def _envelope(stdout: str) -> Envelope:
    assert stdout.count("\n") == 1, stdout  # one JSON line, nothing else on stdout
    return Envelope.model_validate_json(stdout)


def test_a_pasted_list_on_one_line_longer_than_the_csv_field_limit_is_read_whole(
    tmp_path: Path,
) -> None:
    values = [str(uuid.UUID(int=i + 1, version=4)) for i in range(4_000)]
    line = ",".join(values)
    assert len(line) > 131_072  # past Python's csv default field limit
    (tmp_path / "pasted.txt").write_text(line + "\n", encoding="utf-8")
    # the real job's dry run in-process: reading the file is no part of the CLI's surface
    planned = Rig(tmp_path).run(tmp_path / "pasted.txt", dry_run=True)
    assert planned.inputs.rows == planned.inputs.valid == planned.inputs.users == 4_000


def test_an_internal_error_claims_no_work_when_the_ledger_holds_none(tmp_path: Path) -> None:
    from batcher.cli.edge import describe_error

    code, message = describe_error(RuntimeError("boom"), "batcher run x", tmp_path / "none.sqlite")
    assert code == 4
    assert "keeps what was done" not in message and "no step was recorded as sent" in message


@pytest.mark.e2e  # the real command in a subprocess
def test_a_second_clone_sends_everything_on_the_simulator_and_the_same_ledger_resumes(
    tmp_path: Path,
) -> None:
    env = _sim_env(tmp_path)  # both clones share the per-user ledger folder
    values = ids(30)
    for clone in ("one", "two"):
        (tmp_path / clone).mkdir()
        write_ids(tmp_path / clone / "ids.csv", values)
    first = run_cli("run", "ids.csv", "--json", cwd=tmp_path / "one", env=env)
    second = run_cli("run", "ids.csv", "--json", cwd=tmp_path / "two", env=env)
    assert first.code == 0 and second.code == 0, second.stderr
    sent = _envelope(second.stdout).result["actions"]["confirm"]  # type: ignore[index]
    assert sent["done"] == 30 and sent["done_elsewhere"] == 0
    assert "another recent run" not in second.stderr
    again = run_cli("run", "ids.csv", "--json", cwd=tmp_path / "two", env=env)
    resumed = _envelope(again.stdout).result["actions"]["confirm"]  # type: ignore[index]
    assert resumed["already_done"] == 30 and resumed["to_send"] == 0  # its own ledger


@pytest.mark.e2e  # the real command in a subprocess
def test_run_uses_config_toml_in_the_current_folder_and_says_so_first(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(FAST)
    write_config(tmp_path / "config.toml", sim.url, auth={})  # no tenant_id: not on the line
    write_ids(tmp_path / "ids.csv", ids(5))
    result = run_cli("run", "ids.csv", "--yes", cwd=tmp_path)
    assert result.code == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert first == f"config: config.toml; target: {sim.url}", first
    assert len(sim.simulator.record.accepted["confirmCompromised"]) == 5  # not the built-in one
    (tmp_path / "elsewhere").mkdir()
    plain = run_cli("run", "../ids.csv", "--dry-run", cwd=tmp_path / "elsewhere")
    first = plain.stderr.splitlines()[0]
    assert first == "config: none; target: the built-in Graph simulator (no real tenant)"


def test_the_recent_runs_note_names_only_ledgers_that_did_this_runs_users(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    shared, other = ids(10, seed=1), ids(10, seed=2)
    folder = tmp_path / "ledgers"
    rig.run(write_ids(tmp_path / "a.csv", shared), ledger=folder / "a.sqlite")
    rig.run(write_ids(tmp_path / "b.csv", other), ledger=folder / "b.sqlite")
    again = rig.run(write_ids(tmp_path / "c.csv", shared), ledger=folder / "c.sqlite")
    assert again.actions[0].done_elsewhere == 10
    note = next(n for n in again.notes if "already done" in n)
    assert str(folder / "a.sqlite") in note and "b.sqlite" not in note


def test_the_live_rate_is_not_shown_until_there_is_enough_to_measure() -> None:
    progress = RunProgress(Console(file=io.StringIO()))
    progress(Event.SENDING, total=10)
    tally = Tally()
    tally.requested()  # one request, milliseconds after the start
    described = progress.describe(tally)
    assert "req/s" not in described and "rate not measured yet" in described
    assert "ETA not known yet" in described


@pytest.mark.e2e  # the real command in a subprocess
def test_every_command_prints_one_json_envelope_of_the_documented_schema(
    tmp_path: Path, simulator_factory: Any
) -> None:
    # a simulator on a port with the tests' quick budgets (./config.toml): the built-in one
    # starts empty and paces its risky-user reads at the default 1 a second, so `verify`
    # would wait seconds on reads of users it does not know
    write_config(tmp_path / "config.toml", simulator_factory().url)
    env = cli_env(XDG_DATA_HOME=str(tmp_path / "data"))
    write_ids(tmp_path / "ids.csv", ids(6))
    ran = run_cli("run", "ids.csv", "--contain", "--yes", "--json", cwd=tmp_path, env=env)
    assert ran.code == 0, ran.stderr
    run = _envelope(ran.stdout)
    assert run.command == "run" and run.ok and run.error is None and run.result is not None
    assert set(run.result["actions"]) == {"disable", "revoke-sessions", "confirm"}
    for legacy in ("action", "confirmed", "unknown", "to_send"):
        assert legacy not in run.result  # nothing about one action beside `actions`
    assert run.result["estimated_seconds"] == round(run.result["estimated_seconds"], 1)
    ledger = run.result["ledger"]
    status = _envelope(run_cli("status", ledger, "--json", cwd=tmp_path, env=env).stdout)
    assert status.command == "status" and status.result["users"] == 6  # type: ignore[index]
    reported = run_cli("report", ledger, "--out", "r.csv", "--json", cwd=tmp_path, env=env)
    report = _envelope(reported.stdout)
    assert report.result == {  # type: ignore[comparison-overlap]
        "out": "r.csv",
        "steps": 18,
        "counts": {a: {"done": 6} for a in ("confirm", "disable", "revoke-sessions")},
    }
    resolved = _envelope(
        run_cli("resolve", "ids.csv", "--out", "t.csv", "--json", cwd=tmp_path, env=env).stdout
    )
    assert resolved.command == "resolve" and resolved.result["inputs"]["valid"] == 6  # type: ignore[index]
    verified = run_cli("verify", ledger, "--json", cwd=tmp_path, env=env)
    verify = _envelope(verified.stdout)
    assert verify.command == "verify" and verify.exit_code == verified.code
    for command in ("replay", "undo"):
        args = [command, ledger, "--json"] + (["--dry-run"] if command == "undo" else [])
        done = run_cli(*args, cwd=tmp_path, env=env)
        assert _envelope(done.stdout).command == command, done.stderr
    missing = run_cli("status", "nope.sqlite", "--json", cwd=tmp_path, env=env)
    failed = _envelope(missing.stdout)
    assert not failed.ok and failed.result is None and failed.error is not None
    assert failed.error.code == "usage" and failed.exit_code == missing.code == 2
    assert not failed.error.message.startswith("error")


def test_the_json_section_of_the_readme_names_every_command() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## JSON output") :]
    for command in ("run", "replay", "undo", "verify", "resolve", "report", "status"):
        assert f"`{command}`" in section


@pytest.mark.e2e
@pytest.mark.posix  # a real SIGTERM to the process
def test_sigterm_stops_like_ctrl_c_and_exits_143(tmp_path: Path, simulator_factory: Any) -> None:
    sim = simulator_factory(
        FAST.model_copy(update={"latency_min_seconds": 0.05, "latency_max_seconds": 0.1})
    )
    config = write_config(tmp_path / "config.toml", sim.url)
    write_ids(tmp_path / "ids.csv", ids(400))
    proc = subprocess.Popen(
        [
            BATCHER,
            "run",
            "--yes",
            "--max-users",
            "100000",
            "ids.csv",
            "--config",
            str(config),
            "--json",
        ],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert sim.simulator.record.wait_for_accepted("confirmCompromised", 40, timeout=60)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    stopped = _envelope(out)
    assert stopped.exit_code == 143 and stopped.error is not None
    assert stopped.error.code == "terminated"


@pytest.mark.e2e  # the real command in a subprocess
def test_report_refuses_an_out_folder_that_does_not_exist(tmp_path: Path) -> None:
    people = write_ids(tmp_path / "ids.csv", ids(3))
    ledger = tmp_path / "l.sqlite"
    ledger_in_process(GraphSimulator(FAST, tokens={TEST_TOKEN}), people, ("confirm",), ledger)
    result = run_cli("report", ledger, "--out", tmp_path / "no" / "such" / "r.csv", cwd=tmp_path)
    assert result.code == 2
    assert "the folder" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "no").exists()


@pytest.mark.e2e  # the real command in a subprocess
def test_a_rerun_says_its_look_ups_came_from_the_ledger(tmp_path: Path) -> None:
    env = _sim_env(tmp_path)
    users = tmp_path / "upns.csv"
    users.write_text("upn\nnobody@contoso.com\n", encoding="utf-8")
    first = run_cli("run", "upns.csv", "--json", cwd=tmp_path, env=env)
    assert _envelope(first.stdout).result["inputs"]["from_ledger"] == 0  # type: ignore[index]
    again = run_cli("run", "upns.csv", "--json", cwd=tmp_path, env=env)
    inputs = _envelope(again.stdout).result["inputs"]  # type: ignore[index]
    assert inputs["looked_up"] == inputs["from_ledger"] == 1 and inputs["lookup_requests"] == 0
    assert "looked up by an earlier run of this ledger" in again.stderr
