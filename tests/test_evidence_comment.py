"""`run --comment --incident ID` and `batcher comment`: one comment on the incident, with the
counts per action, the run ID and the ledger's name, posted once across a kill and reruns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batcher.simulator.comments import INCIDENTS
from tests.helpers import cli_env, ids, ledger_in_process, run_cli, write_config, write_ids

INCIDENT = INCIDENTS[0]


def _comments(sim: Any, incident: str = INCIDENT) -> list[str]:
    return [c["comment"] for c in sim.simulator.incidents.comments[incident]]


@pytest.mark.e2e
@pytest.mark.posix  # the failpoint kills the process with SIGKILL
def test_the_incident_comment_is_posted_exactly_once_across_a_kill_and_a_rerun(
    tmp_path: Path, simulator: Any
) -> None:
    write_ids(tmp_path / "ids.csv", ids(5))
    config = write_config(tmp_path / "config.toml", simulator.url)
    args = ["run", "ids.csv", "--contain", "--config", config, "-y", "--comment"]
    args += ["--incident", INCIDENT, "--ledger", "incident.sqlite"]
    killed = run_cli(*args, cwd=tmp_path, env=cli_env(BATCHER_FAILPOINT="comment.after_post"))
    assert killed.code == -9, killed.stderr  # SIGKILL: after the POST, before the record
    [posted] = _comments(simulator)  # Graph has it; the ledger does not know yet
    first_line = posted.splitlines()[0]
    assert first_line.startswith("batcher run ")
    assert "ledger: incident.sqlite" in posted
    for action in ("disable", "revoke-sessions", "confirm"):
        assert (
            f"{action}: done 5, failed 0, unknown 0, skipped 0, protected 0, held back 0" in posted
        )

    rerun = run_cli(*args, cwd=tmp_path, env=cli_env())
    assert rerun.code == 0, rerun.stderr
    assert "already there (found on the incident)" in rerun.stdout + rerun.stderr
    assert _comments(simulator) == [posted]  # not posted twice

    again = run_cli(*args, cwd=tmp_path, env=cli_env())
    assert again.code == 0, again.stderr
    assert "already there (the ledger records it)" in again.stdout + again.stderr
    later = run_cli(
        "comment",
        "incident.sqlite",
        "--incident",
        INCIDENT,
        "--config",
        config,
        "--json",
        cwd=tmp_path,
        env=cli_env(),
    )
    assert later.code == 0, later.stderr
    result = later.json()["result"]
    assert result["posted"] is False and result["already"] == "ledger"
    assert result["run_id"] in first_line
    assert _comments(simulator) == [posted]


@pytest.mark.e2e
def test_batcher_comment_posts_a_run_on_another_incident_once(
    tmp_path: Path, simulator: Any
) -> None:
    people = write_ids(tmp_path / "ids.csv", ids(3))
    config = write_config(tmp_path / "config.toml", simulator.url)
    ledger_in_process(simulator.simulator, people, ("confirm",), tmp_path / "l.sqlite")  # setup
    assert _comments(simulator, INCIDENTS[1]) == []  # no --comment: nothing said
    args = ["comment", "l.sqlite", "--incident", INCIDENTS[1], "--config", config, "--json"]
    first = run_cli(*args, cwd=tmp_path)
    assert first.code == 0, first.stderr
    assert first.json()["result"]["posted"] is True
    assert first.json()["result"]["request_id"]
    second = run_cli(*args, cwd=tmp_path)
    assert second.json()["result"]["posted"] is False
    [said] = _comments(simulator, INCIDENTS[1])
    assert "confirm: done 3, failed 0" in said


@pytest.mark.e2e
def test_a_comment_on_an_incident_graph_does_not_have_says_what_to_check(
    tmp_path: Path, simulator: Any
) -> None:
    people = write_ids(tmp_path / "ids.csv", ids(2))
    config = write_config(tmp_path / "config.toml", simulator.url)
    # the incident is also where the run reads users: an unknown one stops it before any write
    unknown = run_cli(
        "run",
        "ids.csv",
        "--config",
        config,
        "-y",
        "--ledger",
        "l.sqlite",
        "--comment",
        "--incident",
        "999",
        cwd=tmp_path,
    )
    assert unknown.code == 2 and "--incident 999" in unknown.stderr
    assert all(not got for got in simulator.simulator.record.accepted.values())
    ledger_in_process(simulator.simulator, people, ("confirm",), tmp_path / "l.sqlite")  # setup
    later = run_cli("comment", "l.sqlite", "--incident", "999", "--config", config, cwd=tmp_path)
    said = later.stdout + later.stderr
    assert "Graph has no incident 999" in said
    assert later.code != 0 and "Traceback" not in said
    refused = run_cli("run", "ids.csv", "--config", config, "--comment", cwd=tmp_path)
    assert refused.code == 2 and "--comment needs --incident ID" in refused.stdout + refused.stderr
