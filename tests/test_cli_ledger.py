"""Ledger features through the real CLI: resume, replay, report, one writer, faults of its own."""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import BATCHER, FAST, SAMPLES, cli_env, run_cli, write_config

ACTION = "confirmCompromised"


def _ids(n: int, seed: int = 1) -> list[str]:
    return [str(uuid.UUID(int=seed * 1_000_003 + i * 7919, version=4)) for i in range(n)]


def _input(tmp_path: Path, ids: list[str], name: str = "ids.csv") -> Path:
    path = tmp_path / name
    path.write_text("id\n" + "\n".join(ids) + "\n", encoding="utf-8")
    return path


def _states(ledger: Path) -> dict[str, str]:
    with sqlite3.connect(ledger) as db:
        return dict(db.execute("SELECT user_id, state FROM ids").fetchall())


def test_default_ledger_path_is_printed_and_found_again(tmp_path: Path, simulator: Any) -> None:
    ids = _ids(30)
    config = write_config(tmp_path / "config.toml", simulator.url)
    first = run_cli(
        "run", "--yes", _input(tmp_path, ids), "--config", config, "--json", cwd=tmp_path
    )
    assert first.code == 0, first.stderr
    ledger = first.json()["ledger"]
    assert f"ledger: {ledger}" in first.stderr
    assert Path(ledger).parent == tmp_path / "runs"
    assert ACTION in Path(ledger).name
    again = run_cli(
        "run", "--yes", _input(tmp_path, ids), "--config", config, "--json", cwd=tmp_path
    )
    assert again.json()["ledger"] == ledger
    assert again.json()["already_done"] == 30


def test_replay_sends_only_failed_ids_as_new_attempts(
    tmp_path: Path, simulator_factory: Any
) -> None:
    ids = _ids(50)
    bad = [ids[3], ids[30], ids[31]]
    broken = simulator_factory(FAST.model_copy(update={"bad_ids": bad}))
    config = write_config(tmp_path / "config.toml", broken.url)
    ledger = tmp_path / "l.sqlite"
    run = run_cli(
        "run",
        "--yes",
        _input(tmp_path, ids),
        "--config",
        config,
        "--ledger",
        ledger,
        "--json",
        cwd=tmp_path,
    )
    assert run.code == 1
    assert f"replay {ledger}" in run.stderr  # the summary says how to replay
    assert run.json()["failed"] == 3

    fixed = simulator_factory()
    config = write_config(tmp_path / "config.toml", fixed.url)
    replay = run_cli("replay", "--yes", ledger, "--config", config, "--json", cwd=tmp_path)
    assert replay.code == 0, replay.stderr
    assert replay.json()["to_send"] == 3
    assert replay.json()["confirmed"] == 3
    assert sorted(fixed.simulator.record.accepted[ACTION]) == sorted(bad)  # nothing else
    assert set(_states(ledger).values()) == {"confirmed"}
    with sqlite3.connect(ledger) as db:
        commands = [r[0] for r in db.execute("SELECT command FROM runs ORDER BY run_id")]
        runs_of_bad = db.execute(
            "SELECT DISTINCT a.run_id FROM attempts a JOIN ids i ON i.batch_id = a.batch_id "
            "WHERE i.user_id = ?",
            (bad[0],),
        ).fetchall()
    assert commands == ["run", "replay"]
    assert len(runs_of_bad) == 1  # its winning batch is the replay's (the run's was split)


def test_replay_only_one_error_code(tmp_path: Path, simulator_factory: Any) -> None:
    ids = _ids(20)
    ledger = tmp_path / "l.sqlite"
    sim = simulator_factory(FAST.model_copy(update={"bad_ids": [ids[0]]}))
    config = write_config(tmp_path / "config.toml", sim.url)
    run_cli(
        "run",
        "--yes",
        _input(tmp_path, ids[:10]),
        "--config",
        config,
        "--ledger",
        ledger,
        cwd=tmp_path,
    )
    flaky = simulator_factory(FAST.model_copy(update={"faults": {"503": 1.0}}))
    config = write_config(tmp_path / "config.toml", flaky.url, send={"retry_for_seconds": 0})
    more = run_cli(
        "run",
        "--yes",
        _input(tmp_path, ids),
        "--config",
        config,
        "--ledger",
        ledger,
        "--json",
        cwd=tmp_path,
    )
    assert more.json()["unknown"] == 10
    fixed = simulator_factory()
    config = write_config(tmp_path / "config.toml", fixed.url)
    nothing = run_cli(
        "replay", "--yes", ledger, "--config", config, "--only", "NoSuchCode", cwd=tmp_path
    )
    assert nothing.code == 2
    assert "codes in this ledger: serviceNotAvailable (10), invalidRequest (1)" in nothing.stderr
    only = run_cli(
        "replay",
        "--yes",
        ledger,
        "--config",
        config,
        "--only",
        "invalidRequest",
        "--json",
        cwd=tmp_path,
    )
    assert only.json()["to_send"] == 1
    assert fixed.simulator.record.accepted[ACTION] == [ids[0]]
    assert only.code == 1  # ten unsure IDs remain
    assert list(_states(ledger).values()).count("unknown") == 10


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_report_has_one_row_per_id_with_graphs_answer(
    tmp_path: Path, simulator_factory: Any, suffix: str
) -> None:
    ids = _ids(25)
    sim = simulator_factory(FAST.model_copy(update={"bad_ids": [ids[7]]}))
    config = write_config(tmp_path / "config.toml", sim.url)
    ledger = tmp_path / "l.sqlite"
    run_cli(
        "run", "--yes", _input(tmp_path, ids), "--config", config, "--ledger", ledger, cwd=tmp_path
    )
    out = tmp_path / f"report{suffix}"
    result = run_cli("report", ledger, "--out", out, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "confirmed 24" in result.stderr and "failed 1" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    frame = {
        ".csv": lambda: pl.read_csv(out, infer_schema=False),
        ".parquet": lambda: pl.read_parquet(out),
        ".json": lambda: pl.DataFrame(json.loads(out.read_text(encoding="utf-8"))),
    }[suffix]()
    assert frame.columns == [
        "user_id",
        "status",
        "attempts",
        "last_http_status",
        "error_code",
        "error_message",
        "request_id",
        "client_request_id",
        "source_file",
        "source_row",
        "sent_at",
        "finished_at",
    ]
    assert frame.height == 25
    assert sorted(frame["user_id"].to_list()) == sorted(ids)
    failed = frame.filter(pl.col("status") == "failed").row(0, named=True)
    assert failed["user_id"] == ids[7]
    assert str(failed["last_http_status"]) == "400"
    assert failed["error_code"] == "invalidRequest"
    assert failed["request_id"] and failed["client_request_id"]
    confirmed = frame.filter(pl.col("status") == "confirmed")
    assert confirmed["request_id"].null_count() == 0


def test_report_csv_is_safe_to_open_in_excel(tmp_path: Path, simulator: Any) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    ledger = tmp_path / "l.sqlite"
    evil = tmp_path / "=HYPERLINK(1).csv"
    _input(tmp_path, _ids(3), name=evil.name)
    assert (
        run_cli("run", "--yes", evil, "--config", config, "--ledger", ledger, cwd=tmp_path).code
        == 0
    )
    out = tmp_path / "r.csv"
    run_cli("report", ledger, "--out", out, cwd=tmp_path)
    with out.open(encoding="utf-8", newline="") as fh:
        cells = [row["source_file"] for row in csv.DictReader(fh)]
    assert cells and all(not c.startswith("=") for c in cells)


def test_report_refuses_an_unknown_format(tmp_path: Path, simulator: Any) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    ledger = tmp_path / "l.sqlite"
    run_cli(
        "run",
        "--yes",
        _input(tmp_path, _ids(2)),
        "--config",
        config,
        "--ledger",
        ledger,
        cwd=tmp_path,
    )
    result = run_cli("report", ledger, "--out", tmp_path / "r.xlsx", cwd=tmp_path)
    assert result.code == 2
    assert "end the name with .csv, .parquet, .json" in result.stderr


def test_second_writer_is_refused_at_once_while_status_reads(
    tmp_path: Path, simulator_factory: Any
) -> None:
    slow = simulator_factory(
        FAST.model_copy(update={"latency_min_seconds": 0.05, "latency_max_seconds": 0.05})
    )
    ids = _ids(600)
    config = write_config(
        tmp_path / "config.toml",
        slow.url,
        send={"batch_size": 10, "max_in_flight": 1, "rate_per_second": 10.0},
    )
    ledger = tmp_path / "l.sqlite"
    command = [BATCHER, "run", "--yes", "ids.csv", "--config", str(config), "--ledger", str(ledger)]
    _input(tmp_path, ids)
    live = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert slow.simulator.record.wait_for_accepted(ACTION, 20, timeout=60)
        second = run_cli(*command[1:], cwd=tmp_path, timeout=30)
        status = run_cli("status", ledger, cwd=tmp_path, timeout=30)
    finally:
        live.send_signal(signal.SIGINT)
        live.communicate(timeout=60)
    assert second.code == 2
    assert "another batcher is writing this ledger" in second.stderr
    assert f"pid {live.pid}" in second.stderr
    assert status.code == 0, status.stderr
    assert "confirmed" in status.stderr and "planned" in status.stderr
    assert live.returncode == 130


def test_a_foreign_file_given_as_ledger_is_refused_and_untouched(
    tmp_path: Path, simulator: Any
) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    foreign = tmp_path / "notes.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (x TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
    before = foreign.read_bytes()
    result = run_cli(
        "run",
        "--yes",
        SAMPLES / "analyst_list.csv",
        "--config",
        config,
        "--ledger",
        foreign,
        cwd=tmp_path,
    )
    assert result.code == 2
    assert "not a batcher ledger" in result.stderr
    assert foreign.read_bytes() == before
    assert simulator.simulator.record.requests == 0


def _limit_file_size(limit: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_stops_before_sending_anything_unrecorded(tmp_path: Path, simulator: Any) -> None:
    ids = _ids(3000)
    config = write_config(
        tmp_path / "config.toml", simulator.url, send={"batch_size": 10, "max_in_flight": 2}
    )
    ledger = tmp_path / "l.sqlite"
    _input(tmp_path, ids)
    proc = run_cli(
        "run",
        "--yes",
        "ids.csv",
        "--config",
        config,
        "--ledger",
        ledger,
        cwd=tmp_path,
        preexec_fn=_limit_file_size(1_200_000),
    )
    assert proc.code == 2, proc.stderr
    message = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(message) == 1 and "is the disk full?" in message[0], proc.stderr
    assert "Traceback" not in proc.stderr
    sent = set(simulator.simulator.record.accepted[ACTION])
    assert sent, "the limit should allow some batches first"
    states = _states(ledger)
    recorded = {uid for uid, state in states.items() if state in ("sending", "confirmed")}
    assert sent <= recorded  # nothing reached Graph that the ledger does not show as sent
    # with space again, the same command finishes the job
    again = run_cli("run", "--yes", "ids.csv", "--config", config, "--ledger", ledger, cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert set(_states(ledger).values()) == {"confirmed"}


def test_read_only_ledger_is_a_clear_error_and_sends_nothing(
    tmp_path: Path, simulator: Any
) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    ledger = tmp_path / "l.sqlite"
    ids = _ids(20)
    assert (
        run_cli(
            "run",
            "--yes",
            _input(tmp_path, ids[:10]),
            "--config",
            config,
            "--ledger",
            ledger,
            cwd=tmp_path,
        ).code
        == 0
    )
    before = len(simulator.simulator.record.accepted[ACTION])
    subprocess.run(["chattr", "+i", str(ledger)], check=True)
    try:
        result = run_cli(
            "run",
            "--yes",
            _input(tmp_path, ids),
            "--config",
            config,
            "--ledger",
            ledger,
            cwd=tmp_path,
        )
    finally:
        subprocess.run(["chattr", "-i", str(ledger)], check=True)
    assert result.code == 2, result.stderr
    assert "read-only" in result.stderr or "cannot write the ledger" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(simulator.simulator.record.accepted[ACTION]) == before


def test_an_old_ledger_is_migrated_and_resumes(tmp_path: Path, simulator: Any) -> None:
    from batcher.ledger import APPLICATION_ID, MIGRATIONS

    ledger = tmp_path / "old.sqlite"
    ids = _ids(12)
    with sqlite3.connect(ledger) as db:  # a version-1 ledger, as the first release wrote it
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.executescript(MIGRATIONS[1])
        db.execute("PRAGMA user_version = 1")
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("action", ACTION),
                ("tenant", "token-tenant"),
                ("cloud", "global"),
                ("api_version", "v1.0"),
            ],
        )
        db.executemany(
            "INSERT INTO ids (user_id, state) VALUES (?, ?)",
            [(i, "confirmed") for i in ids[:4]] + [(i, "sending") for i in ids[4:6]],
        )
    os.chmod(ledger, 0o600)
    config = write_config(tmp_path / "config.toml", simulator.url)
    result = run_cli(
        "run",
        "--yes",
        _input(tmp_path, ids),
        "--config",
        config,
        "--ledger",
        ledger,
        "--json",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    assert result.json()["already_done"] == 4
    assert sorted(simulator.simulator.record.accepted[ACTION]) == sorted(ids[4:])
    with sqlite3.connect(ledger) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == max(MIGRATIONS)
        run = db.execute(
            "SELECT command, os_user, host, inputs, config_digest FROM runs"
        ).fetchone()
    assert run[0] == "run" and run[1] and run[2]
    inputs = json.loads(run[3])
    assert inputs[0]["sha256"] and len(inputs[0]["sha256"]) == 64
    assert len(run[4]) == 64
