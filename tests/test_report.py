"""Report helpers: spreadsheet-safe cells, durations, the rejects file."""

from __future__ import annotations

import csv
import stat
from pathlib import Path

import polars as pl
import pytest

from batcher.report import excel_safe_expr, format_duration, write_rejects


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ('=HYPERLINK("x")', '\'=HYPERLINK("x")'),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("plain", "plain"),
        ("a=b", "a=b"),
    ],
)
def test_excel_safe_defuses_formulas(value: str, safe: str) -> None:
    column = pl.DataFrame({"v": [value]}).select(excel_safe_expr(pl.col("v")))
    assert column.item() == safe


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.4, "59s"), (61, "1m 01s"), (3720, "1h 02m")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_rejects_file_is_owner_only_and_excel_safe(tmp_path: Path) -> None:
    rejects = pl.DataFrame(
        {
            "source_file": ["a.csv", "a.csv"],
            "source_row": [3, 9],
            "raw_value": ["=cmd|' /C calc'!A0", "bob@example.com"],
            "reason": ["not a GUID", "looks like a UPN"],
        }
    )
    path = tmp_path / "out" / "x.rejects.csv"
    write_rejects(rejects, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["source_file", "row", "raw_value", "reason"]
    assert rows[1] == ["a.csv", "3", "'=cmd|' /C calc'!A0", "not a GUID"]
    assert rows[2][2] == "bob@example.com"
