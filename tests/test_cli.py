"""The command line in-process (typer's runner): help, refusals and their exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batcher.cli import app
from tests.helpers import SAMPLES

runner = CliRunner()


@pytest.mark.parametrize(
    "command", ["run", "replay", "undo", "verify", "resolve", "report", "status", "simulate"]
)
def test_help_shows_no_type_tags(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert not re.search(r"<(bool|str|path|int|float|list\[)", result.output), result.output
    assert "Usage: " in result.output
    if command == "replay":
        assert "--dry-run" not in result.output  # replay has none, and no help text mentions it


def test_run_help_names_every_action_and_the_contain_shortcut() -> None:
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}, prog_name="batcher")
    for name in ("confirm", "dismiss", "disable", "enable", "revoke-sessions", "--contain"):
        assert name in result.output
    assert "Usage: batcher run [OPTIONS] INPUT..." in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("line", "name"),
    [("batch_size = true", "batch_size"), ('rate_per_second = "1"', "rate_per_second")],
)
def test_a_config_value_of_the_wrong_type_is_refused(tmp_path: Path, line: str, name: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[send]\n{line}\n", encoding="utf-8")
    result = runner.invoke(
        app, ["run", str(SAMPLES / "analyst_list.csv"), "-c", str(config), "--dry-run"]
    )
    assert result.exit_code == 2
    assert f"[send] {name}" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("one", "other"), [("confirm", "dismiss"), ("disable", "enable")])
def test_contradictory_actions_are_refused_naming_the_clash(one: str, other: str) -> None:
    result = runner.invoke(
        app,
        [
            "run",
            str(SAMPLES / "analyst_list.csv"),
            "--action",
            other,
            "--action",
            one,
            "--dry-run",
            "--json",
        ],
    )
    assert result.exit_code == 2
    first, second = sorted((one, other))
    message = f"--action {first} and --action {second} contradict each other"
    assert message in result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["exit_code"] == 2


def test_contain_with_dismiss_is_refused_as_confirm_with_dismiss() -> None:
    result = runner.invoke(
        app,
        ["run", str(SAMPLES / "analyst_list.csv"), "--contain", "--action", "dismiss", "--dry-run"],
    )
    assert result.exit_code == 2 and "contradict each other" in result.output


def test_an_unknown_action_is_refused_listing_them() -> None:
    result = runner.invoke(
        app, ["run", str(SAMPLES / "analyst_list.csv"), "--action", "wipe", "--dry-run"]
    )
    assert result.exit_code == 2
    assert (
        "unknown action 'wipe'; choose from disable, enable, reset-password, revoke-sessions, "
        "remove-auth-methods, disable-mail-rules, enable-mail-rules, confirm, dismiss"
        in result.output
    )
