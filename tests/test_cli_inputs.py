"""Inputs through the real CLI: every shape in one run, the rejects file, and bad input (exit 2)."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_config

INPUTS = Path(__file__).resolve().parent / "fixtures" / "inputs"
EXPECTED = json.loads((INPUTS / "expected.json").read_text(encoding="utf-8"))
FIXTURES = sorted(key for key in EXPECTED if "#" not in key)  # those read without --column
A = "1e250c70-dff6-4e52-8690-a9c144e7cf0f"
B = "8db8df93-edd5-4cd5-86b3-bc355166765c"


def _first_seen(names: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for name in names:
        seen.update(dict.fromkeys(EXPECTED[name]["ids"]))
    return list(seen)


def test_every_shape_in_one_dry_run_counts_every_row_and_sends_nothing(
    tmp_path: Path, simulator
) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    paths = [INPUTS / name for name in FIXTURES]
    result = run_cli("run", *paths, "--config", config, "--dry-run", "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    got = result.json()
    assert got["rows"] == sum(EXPECTED[n]["rows"] for n in FIXTURES)
    assert got["invalid"] == sum(EXPECTED[n]["invalid"] for n in FIXTURES)
    assert got["valid"] == got["to_send"] == len(_first_seen(FIXTURES))
    assert got["rows"] == got["valid"] + got["duplicates"] + got["invalid"]
    for name in FIXTURES:  # how each file was read, which column was used, and why
        column = EXPECTED[name]["column"]
        line = (
            rf"{re.escape(str(INPUTS / name))}: {EXPECTED[name]['rows']:,} rows, "
            rf"read as [^;\n]+; ID column {re.escape(repr(column))} \("
        )
        assert re.search(line, result.stderr), name
    assert "@odata.nextLink" in result.stderr
    assert simulator.simulator.record.requests == 0


def test_a_normal_run_sends_exactly_the_unique_ids_of_several_shapes(
    tmp_path: Path, simulator
) -> None:
    names = [
        "winps51_outfile_table_utf16le.txt",
        "defender_hunting_export.xlsx",
        "defender_streaming.ndjson.gz",
        "adx_aadriskyusers.parquet",
        "excel_de_semicolon.csv",
    ]
    config = write_config(tmp_path / "config.toml", simulator.url)
    paths = [INPUTS / n for n in names]
    result = run_cli("run", "--yes", *paths, "--config", config, "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    sent = simulator.simulator.record.accepted["confirmCompromised"]
    assert sorted(sent) == sorted(_first_seen(names))  # each exactly once
    assert result.json()["confirmed"] == len(_first_seen(names))


def test_column_option_takes_a_dotted_path_into_nested_json(tmp_path: Path, simulator) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    path = INPUTS / "graph_users_array.json"
    args = ("run", "--yes", path, "--column", "manager.id", "--config", config, "--json")
    result = run_cli(*args, cwd=tmp_path)
    assert result.code == 0, result.stderr
    sent = simulator.simulator.record.accepted["confirmCompromised"]
    assert sorted(sent) == sorted(EXPECTED["graph_users_array.json#manager.id"]["ids"])
    assert not set(sent) & set(EXPECTED["graph_users_array.json#id"]["ids"])
    assert "ID column 'manager.id' (chosen with --column)" in result.stderr


def test_rejects_file_names_file_row_raw_value_and_reason(tmp_path: Path, simulator) -> None:
    config = write_config(tmp_path / "config.toml", simulator.url)
    path = INPUTS / "analyst_list.txt"
    result = run_cli("run", path, "--config", config, "--dry-run", "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    rejects = Path(result.json()["rejects"])
    rejects = rejects if rejects.is_absolute() else tmp_path / rejects
    assert f"rejects: {result.json()['rejects']}" in result.stderr
    with rejects.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert [r[:3] for r in rows[1:]] == [
        [str(path), "6", ""],
        [str(path), "7", "avery.stone@contoso.example"],
        [str(path), "8", "00000000-0000-0000-0000-000000000000"],
        [str(path), "9", "1e250c70d-ff6-4e52-8690-a9c144e7cf0f"],
    ]
    assert len(rows) - 1 == result.json()["invalid"] == EXPECTED["analyst_list.txt"]["invalid"]
    assert "UPN" in rows[2][3]


def test_cap_sized_export_warns_on_stderr(tmp_path: Path, simulator) -> None:
    ids = [f"{n:08x}-0000-4000-8000-{n:012x}" for n in range(1, 2501)]
    path = tmp_path / "portal.csv"
    path.write_text("User ID\n" + "\n".join(ids) + "\n", encoding="utf-8")
    config = write_config(tmp_path / "config.toml", simulator.url)
    result = run_cli("run", path, "--config", config, "--dry-run", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "exactly 2,500 rows" in result.stderr
    assert "cut short" in result.stderr


BAD = {
    "binary.csv": (bytes(range(256)) * 16, "binary.csv: holds binary data"),
    "nothing_valid.csv": (b"UserId\nava@contoso.example\nn/a\n", "holds no valid user ID"),
    "tie.csv": (f"Left,Right\n{A},{B}\n".encode(), "choose one with --column 'Left'"),
    "header_only.csv": (b"UserId,Name\n", "holds no rows of data"),
    "broken.ndjson": (f'{{"id": "{A}"}}\n{{"id": \n'.encode(), "line 2 is not valid JSON"),
    "damaged.csv.gz": (gzip.compress(f"id\n{A}\n".encode(), mtime=0)[:-12], "damaged gzip"),
    "ragged.csv": (f"UserId,Name\n{A},Ava\n{B},Stone, Bo\n".encode(), "row 2 has more fields"),
    "wrong_separator.csv": (f"Id~Name\n{A}~Ava\n".encode(), "separator or layout"),
    "report.csv": (b"%PDF-1.7\n" + bytes(32), "is a PDF document"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_exits_2_with_one_line_and_sends_nothing(
    tmp_path: Path, simulator, name: str
) -> None:
    data, needle = BAD[name]
    (tmp_path / name).write_bytes(data)
    (tmp_path / "good.csv").write_text(f"id\n{A}\n", encoding="utf-8")
    config = write_config(tmp_path / "config.toml", simulator.url)
    result = run_cli("run", "--yes", "good.csv", name, "--config", config, cwd=tmp_path)
    assert result.code == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert name in lines[0]
    assert "Traceback" not in result.stderr
    assert simulator.simulator.record.requests == 0
