"""Undo and verify through the real CLI against the simulator's own state."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from tests.conftest import FAST, run_cli, write_config

ACTION = "confirmCompromised"


def _ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i * 15_485_863 + 11, version=4)) for i in range(n)]


def _confirm(tmp_path: Path, sim: Any, ids: list[str]) -> tuple[Path, Path]:
    (tmp_path / "ids.csv").write_text("id\n" + "\n".join(ids) + "\n", encoding="utf-8")
    config = write_config(tmp_path / "config.toml", sim.url)
    ledger = tmp_path / "incident.sqlite"
    run = run_cli("run", "--yes", "ids.csv", "--config", config, "--ledger", ledger, cwd=tmp_path)
    assert run.code in (0, 1), run.stderr
    return config, ledger


def test_undo_dismisses_exactly_the_ids_the_ledger_confirmed(
    tmp_path: Path, simulator_factory: Any
) -> None:
    ids = _ids(130)
    bad = [ids[5], ids[77]]
    sim = simulator_factory(FAST.model_copy(update={"bad_ids": bad}))
    config, ledger = _confirm(tmp_path, sim, ids)
    record = sim.simulator.record
    outsider = str(uuid.uuid4())
    record.apply(ACTION, [outsider], "confirmedCompromised")  # confirmed by someone else

    refused = run_cli("undo", ledger, "--config", config, cwd=tmp_path)
    assert refused.code == 2 and "no terminal to ask on" in refused.stderr
    plan = run_cli("undo", ledger, "--config", config, "--dry-run", "--json", cwd=tmp_path)
    assert plan.json()["to_send"] == 128 and plan.json()["action"] == "dismiss"

    undo = run_cli("undo", "--yes", ledger, "--config", config, "--json", cwd=tmp_path)
    assert undo.code == 0, undo.stderr
    assert undo.json()["confirmed"] == 128
    confirmed = set(ids) - set(bad)
    assert sorted(record.accepted["dismiss"]) == sorted(confirmed)
    assert {u for u, s in record.risk_state.items() if s == "dismissed"} == confirmed
    assert record.risk_state[outsider] == "confirmedCompromised"  # not in our ledger: untouched
    assert all(b not in record.risk_state for b in bad)

    undo_ledger = tmp_path / "incident.undo.sqlite"
    with sqlite3.connect(undo_ledger) as db:
        assert dict(db.execute("SELECT key, value FROM meta"))["action"] == "dismiss"
        assert db.execute("SELECT COUNT(*) FROM ids WHERE state = 'confirmed'").fetchone()[0] == 128
    again = run_cli("undo", "--yes", ledger, "--config", config, "--json", cwd=tmp_path)
    assert again.json()["already_done"] == 128 and again.json()["to_send"] == 0
    assert len(record.accepted["dismiss"]) == 128


def test_undo_refuses_a_ledger_that_is_not_a_confirm_run(tmp_path: Path, simulator: Any) -> None:
    config, ledger = _confirm(tmp_path, simulator, _ids(5))
    run_cli("undo", "--yes", ledger, "--config", config, cwd=tmp_path)
    result = run_cli(
        "undo", "--yes", tmp_path / "incident.undo.sqlite", "--config", config, cwd=tmp_path
    )
    assert result.code == 2
    assert "undo reverses a confirmCompromised ledger" in result.stderr


def test_verify_reads_back_confirmed_processing_and_not_confirmed(
    tmp_path: Path, simulator_factory: Any
) -> None:
    ids = _ids(130)
    sim = simulator_factory(FAST.model_copy(update={"processing_seconds": 3600}))
    config, ledger = _confirm(tmp_path, sim, ids)
    record = sim.simulator.record
    for uid in ids[:100]:  # these were applied an hour ago: processing is over
        record.applied_at[uid] -= 3600
    record.risk_state[ids[0]] = "dismissed"  # someone dismissed this one since
    reads_before = record.reads

    result = run_cli("verify", ledger, "--config", config, "--json", cwd=tmp_path)
    assert result.code == 1, result.stderr
    summary = result.json()
    assert (summary["checked"], summary["confirmed"], summary["processing"]) == (130, 99, 30)
    assert summary["not_confirmed"] == 1
    # one page of the filtered list, then one read per ID missing from it
    assert summary["requests"] == record.reads - reads_before == 1 + 31
    frame = pl.read_csv(summary["report"])
    status = dict(zip(frame["user_id"], frame["verify_status"], strict=True))
    assert status[ids[0]] == "not_confirmed"
    assert status[ids[1]] == "confirmed"
    assert status[ids[129]] == "processing"
    assert "verify again in a while" in result.stderr


def test_verify_a_few_ids_reads_each_user(tmp_path: Path, simulator: Any) -> None:
    ids = _ids(8)
    config, ledger = _confirm(tmp_path, simulator, ids)
    record = simulator.simulator.record
    reads_before = record.reads
    result = run_cli("verify", ledger, "--config", config, "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.json()["confirmed"] == 8
    assert record.reads - reads_before == 8


def test_verify_after_undo_expects_dismissed(tmp_path: Path, simulator: Any) -> None:
    ids = _ids(40)
    config, ledger = _confirm(tmp_path, simulator, ids)
    run_cli("undo", "--yes", ledger, "--config", config, cwd=tmp_path)
    result = run_cli(
        "verify", tmp_path / "incident.undo.sqlite", "--config", config, "--json", cwd=tmp_path
    )
    assert result.code == 0, result.stderr
    assert result.json()["expected_state"] == "dismissed"
    assert result.json()["confirmed"] == 40


def test_undo_also_dismisses_ids_whose_answer_was_lost(
    tmp_path: Path, simulator_factory: Any
) -> None:
    ids = _ids(30)
    lossy = simulator_factory(FAST.model_copy(update={"faults": {"lost": 1.0}}))
    (tmp_path / "ids.csv").write_text("id\n" + "\n".join(ids) + "\n", encoding="utf-8")
    config = write_config(tmp_path / "config.toml", lossy.url, send={"retry_for_seconds": 0})
    ledger = tmp_path / "incident.sqlite"
    run = run_cli(
        "run",
        "--yes",
        "ids.csv",
        "--config",
        config,
        "--ledger",
        ledger,
        "--json",
        cwd=tmp_path,
    )
    assert run.json()["unknown"] == 30  # Graph applied them; the answers never came
    assert set(lossy.simulator.record.risk_state) == set(ids)
    undo = run_cli("undo", "--yes", ledger, "--config", config, "--json", cwd=tmp_path)
    assert undo.json()["to_send"] == 30
    assert "30 unsure" in undo.stderr


def test_undo_waits_for_no_one_while_the_run_still_writes(tmp_path: Path, simulator: Any) -> None:
    from batcher.ledger import WriterLock

    config, ledger = _confirm(tmp_path, simulator, _ids(5))
    held = WriterLock.acquire(ledger)  # as a run still going would hold it
    try:
        result = run_cli("undo", "--yes", ledger, "--config", config, cwd=tmp_path)
    finally:
        held.release()
    assert result.code == 2
    assert "another batcher is writing this ledger" in result.stderr
    assert simulator.simulator.record.accepted["dismiss"] == []
