"""The end of a run is recorded before anything after sending can fail (the report), through
the real command."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import pytest

from batcher.platform import command_line
from tests.helpers import counts, ids, run_cli, runs_of, write_config, write_ids

pytestmark = pytest.mark.e2e


def test_a_report_that_cannot_be_written_leaves_the_run_finished_and_says_how_to_write_it(
    tmp_path: Path, simulator: Any
) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    ledger = tmp_path / "l.sqlite"
    write_ids(tmp_path / "ids.csv", ids(5))
    report = tmp_path / "l.report.csv"
    report.mkdir()  # a directory where the report goes: it cannot be written after sending
    run = run_cli("run", "--yes", "ids.csv", "-c", config, "--ledger", ledger, cwd=tmp_path)
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert counts(ledger) == {"confirm": {"done": 5}}  # sent, then the report failed
    probe = tmp_path / "probe"
    probe.write_text("")
    with pytest.raises(OSError) as refused:  # what this OS says of a file over a directory
        os.replace(probe, report)
    again = command_line(["batcher", "report", str(ledger), "--out", str(report)])
    [line] = [x for x in run.stderr.splitlines() if "was not written" in x]
    assert line == (
        f"note: the report {report} was not written ({refused.value.strerror}); "
        f"write it with: {again}"
    )
    [record] = runs_of(ledger)
    assert record["finished_at"] is not None
    status = run_cli("status", ledger, cwd=tmp_path)
    assert status.code == 0, status.stderr
    assert "killed" not in status.stdout + status.stderr
    report.rmdir()  # the cause fixed, the command in the line writes the report
    written = run_cli(*shlex.split(again)[1:], cwd=tmp_path)
    assert written.code == 0, written.stderr
    assert report.read_text().startswith("user_id")
