"""Blast radius and change control through the real CLI: --yes above the threshold, the
primary domain at the gate, plan -> show -> apply, an edited plan, apply after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from batcher.job.planfile import digest_of
from batcher.simulator import GraphSimulator, RunningSimulator
from batcher.simulator.directory import DirectoryUser
from tests.helpers import (
    BATCHER,
    FAST,
    TEST_TOKEN,
    cli_env,
    counts,
    ids,
    plan_in_process,
    run_cli,
    write_config,
)

pytestmark = pytest.mark.e2e

ACTION = "confirmCompromised"


def _input(tmp_path: Path, n: int) -> list[str]:
    users = ids(n)
    (tmp_path / "ids.csv").write_text("id\n" + "\n".join(users) + "\n", encoding="utf-8")
    return users


def test_yes_alone_above_confirm_over_is_refused_before_any_request(
    tmp_path: Path, simulator: Any
) -> None:
    _input(tmp_path, 130)
    config = write_config(tmp_path / "config.toml", simulator.url)
    disable = ("--action", "disable")
    result = run_cli("run", "ids.csv", "--yes", *disable, "--config", config, cwd=tmp_path)
    assert result.code == 2, result.stderr
    assert "refusing --yes alone for 130 users" in result.stderr
    assert "confirm_over = 100" in result.stderr and "--max-users 130" in result.stderr
    # the read-only look-up tells how many users the plan holds: no write was sent
    assert simulator.simulator.record.writes == []
    assert all(not got for got in simulator.simulator.record.accepted.values())


def test_confirming_risk_alone_is_outside_the_blast_radius(tmp_path: Path, simulator: Any) -> None:
    users = _input(tmp_path, 130)
    config = write_config(tmp_path / "config.toml", simulator.url)
    result = run_cli("run", "ids.csv", "--yes", "--config", config, cwd=tmp_path)
    assert result.code == 0, result.stderr  # it changes risk, not access: --yes suffices
    assert sorted(simulator.simulator.record.accepted[ACTION]) == sorted(users)


def test_yes_with_max_users_proceeds_only_within_it(tmp_path: Path, simulator: Any) -> None:
    users = _input(tmp_path, 130)
    config = write_config(tmp_path / "config.toml", simulator.url)
    over = run_cli(
        "run", "ids.csv", "--yes", "--max-users", "129", "--config", config, cwd=tmp_path
    )
    assert over.code == 2 and "more than --max-users 129" in over.stderr
    assert simulator.simulator.record.requests == 0
    ok = run_cli("run", "ids.csv", "--yes", "--max-users", "130", "--config", config, cwd=tmp_path)
    assert ok.code == 0, ok.stderr
    assert sorted(simulator.simulator.record.accepted[ACTION]) == sorted(users)


def test_plan_then_apply_acts_on_exactly_the_plan_and_sends_nothing_at_plan(
    tmp_path: Path, simulator: Any
) -> None:
    users = _input(tmp_path, 30)
    config = write_config(tmp_path / "config.toml", simulator.url)
    made = run_cli("plan", "ids.csv", "--config", config, "--out", "p.json", cwd=tmp_path)
    assert made.code == 0, made.stderr
    assert simulator.simulator.record.requests == 0  # object IDs for confirm: no look-up
    content = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    assert content["digest"] == digest_of(content)
    assert [u["user_id"] for u in content["users"]] == users
    assert {u["verdict"] for u in content["users"]} == {"act"}
    shown = run_cli("show", "p.json", cwd=tmp_path)
    assert shown.code == 0, shown.stderr
    assert "digest verified" in shown.stdout and users[0] in shown.stdout
    (tmp_path / "ids.csv").write_text("id\n" + ids(5, seed=9)[0] + "\n", encoding="utf-8")
    done = run_cli("apply", "p.json", "--yes", "--config", config, cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert "plan p.json by " in done.stderr
    assert sorted(simulator.simulator.record.accepted[ACTION]) == sorted(users)


def test_an_edited_plan_is_refused_before_any_request(tmp_path: Path, simulator: Any) -> None:
    _input(tmp_path, 30)
    config = write_config(tmp_path / "config.toml", simulator.url)
    path = tmp_path / "p.json"
    plan_in_process(simulator.simulator, tmp_path / "ids.csv", ("confirm",), path)  # the setup
    content = json.loads(path.read_text(encoding="utf-8"))
    content["users"].append({**content["users"][0], "user_id": ids(1, seed=7)[0]})
    path.write_text(json.dumps(content, indent=1), encoding="utf-8")
    result = run_cli("apply", "p.json", "--yes", "--config", config, cwd=tmp_path)
    assert result.code == 2
    assert "the plan was changed after it was made" in result.stderr
    assert simulator.simulator.record.requests == 0
    assert not (tmp_path / "p.sqlite").exists()


def test_a_plan_for_another_tenant_or_too_old_is_refused(tmp_path: Path, simulator: Any) -> None:
    _input(tmp_path, 3)
    config = write_config(tmp_path / "config.toml", simulator.url)
    path = tmp_path / "p.json"
    plan_in_process(simulator.simulator, tmp_path / "ids.csv", ("confirm",), path)  # the setup
    content = json.loads(path.read_text(encoding="utf-8"))
    for change, said in (
        ({"tenant": "0f0e0d0c-0000-4000-8000-000000000abc"}, "the plan is for tenant 0f0e0d0c"),
        ({"created_at": "2020-01-01T00:00:00+00:00"}, "plan_max_age_hours = 24"),
    ):
        edited = {**content, **change}
        edited["digest"] = digest_of(edited)  # signed again: not an edit, another plan
        path.write_text(json.dumps(edited), encoding="utf-8")
        result = run_cli("apply", "p.json", "--yes", "--config", config, cwd=tmp_path)
        assert result.code == 2 and said in result.stderr, result.stderr
    assert simulator.simulator.record.requests == 0


@pytest.mark.posix  # SIGKILL
def test_apply_resumes_after_sigkill_with_nothing_lost(tmp_path: Path) -> None:
    n = 400
    people = [
        DirectoryUser(id=u, userPrincipalName=f"u{i}@contoso.com") for i, u in enumerate(ids(n))
    ]
    slow = FAST.model_copy(update={"latency_min_seconds": 0.002, "latency_max_seconds": 0.01})
    with RunningSimulator(GraphSimulator(slow, tokens={TEST_TOKEN}, users=people)) as server:
        record = server.simulator.record
        (tmp_path / "upns.csv").write_text(
            "upn\n" + "\n".join(u.userPrincipalName for u in people) + "\n", encoding="utf-8"
        )
        config = write_config(
            tmp_path / "config.toml",
            server.url,
            directory={"writes_per_window": 20, "writes_window_seconds": 0.2, "writes_at_once": 2},
        )
        made = run_cli(
            "plan",
            "upns.csv",
            "--action",
            "disable",
            "--config",
            config,
            "-o",
            "p.json",
            cwd=tmp_path,
        )
        assert made.code == 0, made.stderr
        command = [
            BATCHER,
            "apply",
            "p.json",
            "--yes",
            "--max-users",
            str(n),
            "--config",
            str(config),
        ]
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        with record.changed:
            assert record.changed.wait_for(lambda: len(record.writes) >= n // 3, 60)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        assert counts(tmp_path / "p.sqlite")["disable"].get("done", 0) < n
        again = run_cli(*command[1:], cwd=tmp_path)
        assert again.code == 0, again.stderr
        assert counts(tmp_path / "p.sqlite") == {"disable": {"done": n}}
        disabled = {w.user_id for w in record.writes if w.op == "disable" and w.status < 300}
        assert disabled == {u.id for u in people}
