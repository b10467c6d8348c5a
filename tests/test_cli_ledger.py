"""What only a real process shows about the ledger: a full disk (a file-size limit on the child
process). Everything else about the ledger is tested in-process (tests/test_job_ledger.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ids, run_cli, states, write_config, write_ids

pytestmark = [pytest.mark.e2e, pytest.mark.posix]  # resource limits, preexec_fn
ACTION = "confirmCompromised"


def _limit_file_size(limit: int) -> Any:
    import resource  # POSIX only

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_stops_before_sending_anything_unrecorded(tmp_path: Path, simulator: Any) -> None:
    config = write_config(
        tmp_path / "config.toml", simulator.url, send={"batch_size": 30, "max_in_flight": 2}
    )
    ledger = tmp_path / "l.sqlite"
    write_ids(tmp_path / "ids.csv", ids(3000))
    proc = run_cli(
        "run",
        "--yes",
        "--max-users",
        "100000",
        "ids.csv",
        "--config",
        config,
        "--ledger",
        ledger,
        cwd=tmp_path,
        preexec_fn=_limit_file_size(2_000_000),  # planning fits; some batches, not all
    )
    assert proc.code == 2, proc.stderr
    message = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(message) == 1 and "is the disk full?" in message[0], proc.stderr
    assert "Traceback" not in proc.stderr
    sent = set(simulator.simulator.record.accepted[ACTION])
    assert sent, "the limit should allow some batches first"
    recorded = {uid for uid, state in states(ledger).items() if state in ("unknown", "done")}
    assert sent <= recorded  # nothing reached Graph that the ledger does not show as sent
    # with space again, the same command finishes the job
    again = run_cli(
        "run",
        "--yes",
        "--max-users",
        "100000",
        "ids.csv",
        "-c",
        config,
        "--ledger",
        ledger,
        cwd=tmp_path,
    )
    assert again.code == 0, again.stderr
    assert set(states(ledger).values()) == {"done"}
