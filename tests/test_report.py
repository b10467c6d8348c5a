"""Report files: owner-only, written atomically, CSV safe for spreadsheets, Parquet and JSON."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path
from typing import IO

import polars as pl
import pytest

from batcher.cli.render import format_duration
from batcher.platform import write_private
from batcher.report import (
    REPORT_FORMATS,
    excel_safe_expr,
    sibling,
    write_rejects,
    write_report,
)

RISKY = '=HYPERLINK("http://evil.example","x")'


def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "error_message": [RISKY, "plain"],
            "attempts": [-2, 3],
            "input_value": ["+44 20 7946 0000", "line one\nline two"],
        },
        schema={
            "user_id": pl.String,
            "error_message": pl.String,
            "attempts": pl.Int64,
            "input_value": pl.String,
        },
    )


def csv_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ('=HYPERLINK("x")', '\'=HYPERLINK("x")'),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_excel_safe_defuses_formulas(value: str, safe: str) -> None:
    column = pl.DataFrame({"v": [value]}).select(excel_safe_expr(pl.col("v")))
    assert column.item() == safe


def test_excel_safe_keeps_missing_values_missing() -> None:
    column = pl.DataFrame({"v": [None, "=1"]}, schema={"v": pl.String})
    assert column.select(excel_safe_expr(pl.col("v"))).to_series().to_list() == [None, "'=1"]


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.4, "59s"), (61, "1m 01s"), (3720, "1h 02m")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# -- the three formats ---------------------------------------------------------------------------
def test_a_csv_report_is_excel_safe_and_keeps_numbers(tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.csv"  # the folder is made
    write_report(frame(), path)
    rows = csv_rows(path)
    assert rows[0] == ["user_id", "error_message", "attempts", "input_value"]
    assert rows[1] == ["u1", "'" + RISKY, "-2", "'+44 20 7946 0000"]  # a number stays a number
    assert rows[2] == ["u2", "plain", "3", "line one\nline two"]


def test_a_parquet_report_keeps_values_and_types_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "report.parquet"
    write_report(frame(), path)
    back = pl.read_parquet(path)
    assert back.schema == frame().schema
    assert back.equals(frame())  # no spreadsheet quoting outside CSV


def test_a_json_report_is_a_list_of_rows(tmp_path: Path) -> None:
    path = tmp_path / "report.JSON"  # the suffix in any case
    write_report(frame(), path)
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert rows[0] == {
        "user_id": "u1",
        "error_message": RISKY,
        "attempts": -2,
        "input_value": "+44 20 7946 0000",
    }
    assert len(rows) == 2


def test_an_unknown_format_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    assert REPORT_FORMATS == (".csv", ".parquet", ".json")
    with pytest.raises(ValueError, match=r"unsupported report format '\.xlsx'"):
        write_report(frame(), tmp_path / "report.xlsx")
    assert list(tmp_path.iterdir()) == []


# -- owner-only and atomic -----------------------------------------------------------------------
@pytest.mark.parametrize("suffix", REPORT_FORMATS)
def test_every_report_is_owner_only_and_leaves_nothing_else(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"report{suffix}"
    write_report(frame(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_a_report_replaces_an_old_one_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    path.write_text("old,report\n" * 1000, encoding="utf-8")
    os.chmod(path, 0o644)
    old_inode = path.stat().st_ino
    write_report(frame(), path)
    assert path.stat().st_ino != old_inode  # a new file renamed over the old one
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert csv_rows(path)[0][0] == "user_id"
    assert len(csv_rows(path)) == 3


def test_a_failed_write_keeps_the_old_report_and_removes_its_temporary_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "report.parquet"
    write_report(frame(), path)
    before = path.read_bytes()
    unwritable = pl.DataFrame({"thing": [object()]}, schema={"thing": pl.Object})
    with pytest.raises(pl.exceptions.PolarsError):  # Parquet holds no Python objects
        write_report(unwritable, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report.parquet"]


def test_write_private_writes_through_a_temporary_file_beside_the_target(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "file.bin"
    seen: list[str] = []

    def write(fh: IO[bytes]) -> None:
        seen.extend(p.name for p in path.parent.iterdir())
        assert not path.exists()  # nothing at the final name until the rename
        fh.write(b"whole")

    write_private(path, write)
    assert path.read_bytes() == b"whole"
    [temporary] = seen
    assert temporary.startswith(".file.bin.")  # hidden, in the same folder (same file system)
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]


def test_write_private_cleans_up_after_an_interrupt(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"

    def interrupted(fh: IO[bytes]) -> None:
        fh.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_private(path, interrupted)
    assert list(tmp_path.iterdir()) == []


# -- rejects and names ---------------------------------------------------------------------------
def test_rejects_file_is_owner_only_and_excel_safe(tmp_path: Path) -> None:
    rejects = pl.DataFrame(
        {
            "reason": ["not a GUID", "looks like a UPN"],
            "raw_value": ["=cmd|' /C calc'!A0", "bob@example.com"],
            "source_row": [3, 9],
            "source_file": ["a.csv", "a.csv"],
            "extra": ["dropped", "dropped"],
        }
    )
    path = tmp_path / "out" / "x.rejects.csv"
    write_rejects(rejects, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = csv_rows(path)
    assert rows[0] == ["source_file", "row", "raw_value", "reason"]  # in this order, only these
    assert rows[1] == ["a.csv", "3", "'=cmd|' /C calc'!A0", "not a GUID"]
    assert rows[2][2] == "bob@example.com"


def test_files_beside_the_ledger_share_its_name() -> None:
    ledger = Path("/runs/incident-2026.sqlite")
    assert sibling(ledger, ".report.csv") == Path("/runs/incident-2026.report.csv")
    assert sibling(ledger, ".rejects.csv") == Path("/runs/incident-2026.rejects.csv")
