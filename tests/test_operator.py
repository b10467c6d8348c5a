"""The operator's view, through a real terminal and without one: plan, gate, progress, stop."""

from __future__ import annotations

import json
import sqlite3
import stat
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import BATCHER, FAST, TEST_TOKEN, cli_env, run_cli, write_config

if TYPE_CHECKING:
    from tests.ptyrun import PtyProcess

pytestmark = pytest.mark.e2e

ACTION = "confirmCompromised"


def _ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i * 104_729 + 3, version=4)) for i in range(n)]


def _input(tmp_path: Path, n: int) -> list[str]:
    ids = _ids(n)
    (tmp_path / "ids.csv").write_text("id\n" + "\n".join(ids) + "\n", encoding="utf-8")
    return ids


def _terminal(tmp_path: Path, *args: str) -> PtyProcess:
    env = cli_env(COLUMNS="160", LINES="50", TERM="xterm")
    env.pop("NO_COLOR")
    from tests.ptyrun import PtyProcess  # pty: POSIX only

    return PtyProcess([BATCHER, *args], cwd=str(tmp_path), env=env)


def test_without_a_terminal_or_yes_a_real_send_is_refused(tmp_path: Path, simulator: Any) -> None:
    _input(tmp_path, 30)
    config = write_config(tmp_path / "config.toml", simulator.url)
    result = run_cli("run", "ids.csv", "--config", config, cwd=tmp_path)
    assert result.code == 2
    assert "no terminal to ask on" in result.stderr and "--yes" in result.stderr
    assert simulator.simulator.record.requests == 0


def test_dry_run_shows_the_plan_and_makes_no_request(tmp_path: Path, simulator: Any) -> None:
    _input(tmp_path, 130)
    config = write_config(
        tmp_path / "config.toml",
        simulator.url,
        send={"rate_per_second": 0.5},
        auth={"tenant_id": "0f0e0d0c-0000-4000-8000-000000000abc"},
    )
    result = run_cli("run", "ids.csv", "--config", config, "--dry-run", cwd=tmp_path)
    assert result.code == 0, result.stderr
    for needle in (
        "to send",
        "130",
        "confirm: 130 users will be confirmed compromised",
        "tenant 0f0e0d0c-0000-4000-8000-000000000abc (global cloud, Graph v1.0)",
        # 3 requests at 0.5 a second: the first at once, then one every 2 s
        "130 steps in at least 3 requests, about 4s within the configured budgets",
        "(does not exist yet)",
        "dry run: nothing was sent",
    ):
        assert needle in result.stderr, needle
    assert simulator.simulator.record.requests == 0
    assert not any(tmp_path.glob("runs/*.sqlite"))  # a dry run creates no ledger


@pytest.mark.posix  # a pseudo-terminal (pty)
def test_typing_the_count_confirms_and_the_run_shows_progress_and_summary(
    tmp_path: Path, simulator: Any
) -> None:
    ids = _input(tmp_path, 130)
    config = write_config(tmp_path / "config.toml", simulator.url)
    term = _terminal(tmp_path, "run", "ids.csv", "--config", str(config))
    # confirming risk changes no account: above [safety] confirm_over it is still the count alone
    screen = term.expect(r"Type 130 \(the number of users\) or yes to go on")
    assert "About to act on 130 users on tenant" in screen
    assert "confirm: 130 users will be confirmed compromised" in screen
    assert simulator.simulator.record.accepted[ACTION] == []  # nothing sent before the answer
    term.type("130\r")
    code = term.wait()
    assert "primary domain" not in term.text
    assert code == 0, term.text
    assert "130/130 steps" in term.text  # the live bar
    assert "confirm 130 done, 0 failed, 0 unknown" in term.text
    assert "report:" in term.text
    assert sorted(simulator.simulator.record.accepted[ACTION]) == sorted(ids)


@pytest.mark.posix  # a pseudo-terminal (pty)
def test_above_confirm_over_a_wrong_primary_domain_sends_nothing(
    tmp_path: Path, simulator: Any
) -> None:
    _input(tmp_path, 101)
    config = write_config(tmp_path / "config.toml", simulator.url)
    term = _terminal(tmp_path, "run", "ids.csv", "--config", str(config), "--action", "disable")
    screen = term.expect(r"Type 101 \(the number of users\) to go on")
    assert "users:" not in screen  # above the threshold: a count, not a list of names
    term.type("yes\r")  # above the threshold, yes is not the count
    term.expect("2 tries left")
    term.type("101\r")
    for answer in ("fabrikam.com", "contoso.com", "simulator"):
        term.expect("primary domain")
        term.type(f"{answer}\r")
    assert term.wait() == 2
    assert "not confirmed: nothing was sent" in term.text
    assert simulator.simulator.record.writes == []


@pytest.mark.posix  # a pseudo-terminal (pty)
def test_below_confirm_over_the_gate_names_the_users(tmp_path: Path, simulator: Any) -> None:
    ids = _input(tmp_path, 25)
    config = write_config(tmp_path / "config.toml", simulator.url)
    term = _terminal(tmp_path, "run", "ids.csv", "--config", str(config))
    screen = term.expect("Type 25")
    for uid in ids[:20]:
        assert uid in screen
    assert ids[20] not in screen and "and 5 more users" in screen
    term.type("25\r")
    assert term.wait() == 0, term.text


@pytest.mark.posix  # a pseudo-terminal (pty)
def test_a_wrong_number_asks_again_three_times_then_sends_nothing(
    tmp_path: Path, simulator: Any
) -> None:
    _input(tmp_path, 30)
    config = write_config(tmp_path / "config.toml", simulator.url)
    ledger = tmp_path / "l.sqlite"
    term = _terminal(tmp_path, "run", "ids.csv", "--config", str(config), "--ledger", str(ledger))
    for answer, left in (("31", "2 tries left"), ("3O", "1 try left")):
        term.expect("Type 30")
        term.type(f"{answer}\r")
        term.expect(left)
    term.type("29\r")
    assert term.wait() == 2
    assert term.text.count("Type 30 (the number of users)") == 3
    assert "not confirmed: nothing was sent" in term.text
    assert simulator.simulator.record.requests == 0
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


@pytest.mark.posix  # a pseudo-terminal (pty)
def test_the_right_number_on_the_second_try_goes_on(tmp_path: Path, simulator: Any) -> None:
    ids = _input(tmp_path, 30)
    config = write_config(tmp_path / "config.toml", simulator.url)
    term = _terminal(tmp_path, "run", "ids.csv", "--config", str(config))
    term.expect("Type 30")
    term.type("300\r")
    term.expect("2 tries left")
    term.type("30\r")
    assert term.wait() == 0, term.text
    assert sorted(simulator.simulator.record.accepted[ACTION]) == sorted(ids)


@pytest.mark.posix  # a pseudo-terminal (pty)
def test_ctrl_c_at_the_prompt_stops_at_once_and_sends_nothing(
    tmp_path: Path, simulator: Any
) -> None:
    _input(tmp_path, 3000)  # Polars reads it with its worker threads: the signal may land there
    config = write_config(tmp_path / "config.toml", simulator.url)
    term = _terminal(tmp_path, "run", "ids.csv", "--config", str(config))
    term.expect("Type 3000")
    pressed = time.monotonic()
    term.type("\x03")  # Ctrl-C, no Enter
    assert term.wait(timeout=10) == 130, term.text
    assert time.monotonic() - pressed < 3
    assert "interrupted" in term.text and "Traceback" not in term.text
    assert simulator.simulator.record.accepted[ACTION] == []  # only the primary domain was read


@pytest.mark.posix  # a pseudo-terminal (pty)
def test_ctrl_c_at_the_keyboard_stops_cleanly_and_says_how_to_resume(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(
        FAST.model_copy(update={"latency_min_seconds": 0.05, "latency_max_seconds": 0.1})
    )
    ids = _input(tmp_path, 3000)
    config = write_config(
        tmp_path / "config.toml", sim.url, send={"batch_size": 10, "rate_per_second": 20.0}
    )
    term = _terminal(
        tmp_path, "run", "ids.csv", "--config", str(config), "--yes", "--max-users", "3000"
    )
    assert sim.simulator.record.wait_for_accepted(ACTION, 50, timeout=60)
    term.type("\x03")  # Ctrl-C
    assert term.wait() == 130, term.text
    assert "stopping: no new requests" in term.text
    assert "to resume: " in term.text
    assert "Traceback" not in term.text
    assert len(sim.simulator.record.accepted[ACTION]) < len(ids)


def test_log_file_has_a_line_per_request_and_per_state_change(
    tmp_path: Path, simulator_factory: Any
) -> None:
    ids = _input(tmp_path, 130)
    sim = simulator_factory(
        FAST.model_copy(update={"faults": {"503": 0.3}, "retry_after_seconds": 0.01, "seed": 5})
    )
    config = write_config(tmp_path / "config.toml", sim.url, send={"batch_size": 10})
    log = tmp_path / "logs" / "run.jsonl"
    result = run_cli(
        "run",
        "--yes",
        "--max-users",
        "130",
        "ids.csv",
        "--config",
        config,
        "--log-file",
        log,
        "--json",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    events = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    requests = [e for e in events if e["event"] == "request"]
    assert len(requests) == sim.simulator.record.requests == result.json()["result"]["requests"]
    sends = [e for e in requests if not e.get("verify")]  # the read of who was already confirmed
    assert len(requests) - len(sends) >= 1
    for event in sends:
        assert {
            "batch",
            "attempt",
            "http_status",
            "error_code",
            "request_id",
            "client_request_id",
            "latency_ms",
            "rate_per_second",
            "throttled_so_far",
        } <= set(event)
        assert event["request_id"] and event["client_request_id"]
    assert {e["http_status"] for e in sends} == {204, 503}
    states = [(e["batch"], e["state"]) for e in events if e["event"] == "state"]
    assert [s for _, s in states].count("done") == 13
    assert [s for _, s in states].count("sending") == 13
    assert events[0]["event"] == "run_started"
    assert events[-1]["event"] == "run_finished" and events[-1]["done"] == len(ids)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_the_token_never_appears_in_any_output(tmp_path: Path, simulator_factory: Any) -> None:
    ids = _input(tmp_path, 70)
    with (tmp_path / "ids.csv").open("a", encoding="utf-8") as fh:
        fh.write("not-an-id\n")
    sim = simulator_factory(FAST.model_copy(update={"bad_ids": [ids[3]], "faults": {"500": 0.2}}))
    config = write_config(tmp_path / "config.toml", sim.url)
    ledger = tmp_path / "l.sqlite"
    log = tmp_path / "run.jsonl"
    runs = [
        run_cli(
            "run",
            "--yes",
            "ids.csv",
            "--config",
            config,
            "--ledger",
            ledger,
            "--log-file",
            log,
            "--json",
            cwd=tmp_path,
        ),
        run_cli("replay", "--yes", ledger, "--config", config, "--log-file", log, cwd=tmp_path),
        run_cli("report", ledger, "--out", tmp_path / "r.json", cwd=tmp_path),
        run_cli("status", ledger, cwd=tmp_path),
    ]
    refused = "refused-secret-token-91c3"
    runs.append(
        run_cli(
            "run",
            "--yes",
            "ids.csv",
            "--config",
            config,
            "--ledger",
            tmp_path / "x.sqlite",
            "--log-file",
            log,
            cwd=tmp_path,
            env=cli_env(BATCHER_ACCESS_TOKEN=refused),
        )
    )
    assert runs[0].code == 1 and runs[-1].code == 3
    streams = "".join(r.stdout + r.stderr for r in runs)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "config.toml"]
    assert any(p.suffix == ".sqlite" for p in files) and log in files
    for secret in (TEST_TOKEN, refused):
        assert secret not in streams
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
