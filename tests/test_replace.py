"""A report another program holds open (Excel, on Windows): tried again briefly, then one line.

Only Windows refuses to rename over a file held open, so the refusal is stood in for: the
rename given to ``Patience`` raises Windows' PermissionError a number of times, then renames
for real. The waits are recorded, never slept.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import polars as pl
import pytest

from batcher.cli.edge import EXIT_USAGE, describe_error
from batcher.errors import OutputError
from batcher.platform import HeldOpen, Patience, write_private
from batcher.report.files import read_report, write_report

SHARING_VIOLATION = "The process cannot access the file because it is being used by another process"


class HeldOpenFor:
    """Windows' answer while Excel keeps the file open, ``refusals`` times, then a real rename."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.tries = 0

    def __call__(self, temp: str, path: Path) -> None:
        self.tries += 1
        if self.tries <= self.refusals:
            raise PermissionError(errno.EACCES, SHARING_VIOLATION, str(path))
        os.replace(temp, path)


def patience(refusals: int) -> tuple[Patience, list[float], HeldOpenFor]:
    slept: list[float] = []
    rename = HeldOpenFor(refusals)
    return Patience(sleep=slept.append, replace=rename), slept, rename


def test_a_file_closed_within_the_waits_is_replaced_after_short_growing_waits(
    tmp_path: Path,
) -> None:
    report = tmp_path / "incident.report.csv"
    report.write_text("old\n", encoding="utf-8")
    wait, slept, rename = patience(refusals=3)
    write_private(report, lambda fh: fh.write(b"new\n"), wait)
    assert report.read_text(encoding="utf-8") == "new\n"
    assert slept == [0.1, 0.2, 0.4] and rename.tries == 4
    assert [p.name for p in tmp_path.iterdir()] == [report.name]  # no temporary file left


def test_a_file_held_open_throughout_gives_up_after_six_tries_and_about_three_seconds(
    tmp_path: Path,
) -> None:
    report = tmp_path / "incident.report.csv"
    report.write_text("old\n", encoding="utf-8")
    wait, slept, rename = patience(refusals=99)
    with pytest.raises(HeldOpen) as refused:
        write_private(report, lambda fh: fh.write(b"new\n"), wait)
    assert refused.value.filename == str(report)
    assert rename.tries == 6 and slept == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert report.read_text(encoding="utf-8") == "old\n"  # the open file is left as it was
    assert [p.name for p in tmp_path.iterdir()] == [report.name]


def test_a_report_held_open_says_in_one_line_which_file_and_what_to_do(tmp_path: Path) -> None:
    report = tmp_path / "incident.report.csv"
    wait, _, _ = patience(refusals=99)
    with pytest.raises(OutputError) as refused:
        write_report(pl.DataFrame({"user_id": ["u1"]}), report, wait)
    code, message = describe_error(refused.value, None)
    assert code == EXIT_USAGE and "\n" not in message
    assert message.startswith(f"{report}: cannot replace this file ({SHARING_VIOLATION})")
    assert "close it there and run the command again, or choose another file name" in message


def test_a_report_refused_once_is_written_whole(tmp_path: Path) -> None:
    report = tmp_path / "incident.report.csv"
    wait, slept, _ = patience(refusals=1)
    write_report(pl.DataFrame({"user_id": ["u1", "u2"]}), report, wait)
    assert read_report(report)["user_id"].to_list() == ["u1", "u2"] and slept == [0.1]
