"""Inputs through `run`: every shape in one run, the rejects file, and bad input refused."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from batcher.errors import InputError
from batcher.inputs import FileSummary
from batcher.simulator.directory import derived_id
from tests.helpers import FIXTURES, Rig, states

INPUTS = FIXTURES / "inputs"
EXPECTED = json.loads((INPUTS / "expected.json").read_text(encoding="utf-8"))
NAMES = sorted(key for key in EXPECTED if "#" not in key)  # those read without --column
A = "1e250c70-dff6-4e52-8690-a9c144e7cf0f"
B = "8db8df93-edd5-4cd5-86b3-bc355166765c"
CONFIRM = "confirmCompromised"


def _first_seen(names: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for name in names:
        seen.update(dict.fromkeys(EXPECTED[name]["ids"]))
    return list(seen)


def _identities(names: list[str]) -> dict[str, str]:
    """Distinct identities (case-folded) -> the user the open directory resolves each to."""
    found: dict[str, str] = {}
    for name in names:
        for value, _kind in EXPECTED[name]["identities"]:
            found.setdefault(value.lower(), derived_id(value))
    return found


def _files(rig: Rig) -> dict[str, FileSummary]:
    return {f.path.name: f for event in rig.events.named("inputs") for f in event["files"]}


def test_every_shape_in_one_dry_run_counts_every_row_and_sends_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    got = rig.run([INPUTS / n for n in NAMES], dry_run=True).to_json()
    assert got["rows"] == sum(EXPECTED[n]["rows"] for n in NAMES)
    assert got["invalid"] == sum(EXPECTED[n]["invalid"] for n in NAMES)
    assert got["skipped"] == sum(EXPECTED[n]["skipped"] for n in NAMES)
    assert got["to_send"] == len(_first_seen(NAMES))  # identities join once looked up
    assert got["valid"] == len(_first_seen(NAMES)) + len(_identities(NAMES))
    assert got["rows"] == got["valid"] + got["duplicates"] + got["invalid"] + got["skipped"]
    files = _files(rig)
    for name in NAMES:  # how each file was read, which column was used, and why
        want = EXPECTED[name]
        assert (files[name].rows, files[name].column) == (want["rows"], want["column"]), name
        assert files[name].format and files[name].column_reason, name
    warnings = [w for event in rig.events.named("inputs") for w in event["warnings"]]
    assert any("@odata.nextLink" in w for w in warnings)
    assert rig.record.requests == 0
    assert not (tmp_path / "ledgers").exists()


def test_a_run_of_every_shape_acts_on_each_user_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    summary = rig.run([INPUTS / n for n in NAMES])
    guests = {v: uid for v, uid in _identities(NAMES).items() if "#ext#" in v}
    members = set(_identities(NAMES).values()) - set(guests.values())
    want = set(_first_seen(NAMES)) | members
    sent = rig.record.accepted[CONFIRM]
    assert sorted(sent) == sorted(want)  # each exactly once
    assert summary.inputs.resolved == len(members) and summary.inputs.guests == len(guests)
    assert summary.actions[0].done == len(want)
    assert summary.actions[0].skipped == len(guests)  # a guest's risk is their home tenant's
    assert {states(rig.ledger_for())[uid] for uid in guests.values()} == {"skipped"}


def test_a_normal_run_sends_exactly_the_unique_ids_of_several_shapes(tmp_path: Path) -> None:
    names = [
        "winps51_outfile_table_utf16le.txt",
        "defender_hunting_export.xlsx",
        "defender_streaming.ndjson.gz",
        "adx_aadriskyusers.parquet",
        "excel_de_semicolon.csv",
    ]
    rig = Rig(tmp_path)
    summary = rig.run([INPUTS / n for n in names])
    assert sorted(rig.record.accepted[CONFIRM]) == sorted(_first_seen(names))
    assert summary.actions[0].done == len(_first_seen(names))
    assert rig.record.filters == []  # object IDs alone need no look-up for confirm


def test_column_takes_a_dotted_path_into_nested_json(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(INPUTS / "graph_users_array.json", column="manager.id")
    sent = rig.record.accepted[CONFIRM]
    assert sorted(sent) == sorted(EXPECTED["graph_users_array.json#manager.id"]["ids"])
    assert not set(sent) & set(EXPECTED["graph_users_array.json#id"]["ids"])
    picked = _files(rig)["graph_users_array.json"]
    assert picked.column == "manager.id" and "--column" in picked.column_reason


def test_rejects_file_names_file_row_raw_value_and_reason(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    path = INPUTS / "analyst_list.txt"
    summary = rig.run(path)
    assert summary.rejects is not None
    with Path(summary.rejects).open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["source_file", "row", "raw_value", "reason"]
    assert [r[:3] for r in rows[1:]] == [
        [str(path), "6", ""],
        [str(path), "8", "00000000-0000-0000-0000-000000000000"],
        [str(path), "9", "1e250c70d-ff6-4e52-8690-a9c144e7cf0f"],
    ]
    assert all(r[3] for r in rows[1:]) and "nil GUID" in rows[2][3]
    assert len(rows) - 1 == summary.inputs.invalid == EXPECTED["analyst_list.txt"]["invalid"]
    assert summary.inputs.resolved == 1  # the UPN on row 7 is no longer a reject


def test_a_cap_sized_export_is_warned_about(tmp_path: Path) -> None:
    values = [f"{n:08x}-0000-4000-8000-{n:012x}" for n in range(1, 2501)]
    path = tmp_path / "portal.csv"
    path.write_text("User ID\n" + "\n".join(values) + "\n", encoding="utf-8")
    rig = Rig(tmp_path)
    rig.run(path, dry_run=True)
    warnings = [w for event in rig.events.named("inputs") for w in event["warnings"]]
    assert any("exactly 2,500 rows" in w and "cut short" in w for w in warnings), warnings


BAD = {
    "binary.csv": (bytes(range(256)) * 16, "binary.csv: holds binary data"),
    "nothing_valid.csv": (b"UserId\nn/a\nTBD\n", "holds no valid user ID"),
    "tie.csv": (f"Left,Right\n{A},{B}\n".encode(), "with --column 'Left' or --column 'Right'"),
    "header_only.csv": (b"UserId,Name\n", "holds no rows of data"),
    "broken.ndjson": (f'{{"id": "{A}"}}\n{{"id": \n'.encode(), "line 2 is not valid JSON"),
    "damaged.csv.gz": (gzip.compress(f"id\n{A}\n".encode(), mtime=0)[:-12], "damaged gzip"),
    "ragged.csv": (f"UserId,Name\n{A},Ava\n{B},Stone, Bo\n".encode(), "row 2 has more fields"),
    "wrong_separator.csv": (f"Id~Name\n{A}~Ava\n".encode(), "separator or layout"),
    "report.csv": (b"%PDF-1.7\n" + bytes(32), "is a PDF document"),
    "empty.csv": (b"", "empty.csv: the file is empty"),
    "words.csv": (b"name,team\nava,red\nbo,blue\n", "found no column of user IDs"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_refused_in_one_line_naming_the_file_and_sends_nothing(
    tmp_path: Path, name: str
) -> None:
    data, needle = BAD[name]
    (tmp_path / name).write_bytes(data)
    good = tmp_path / "good.csv"
    good.write_text(f"id\n{A}\n", encoding="utf-8")
    rig = Rig(tmp_path)
    with pytest.raises(InputError) as refused:
        rig.run([good, tmp_path / name])
    message = str(refused.value)
    assert needle in message and name in message
    assert "\n" not in message
    assert rig.record.requests == 0
    assert not (tmp_path / "ledgers").exists()  # refused before the ledger is opened


@pytest.mark.parametrize(
    ("target", "column", "needle"),
    [
        ("missing.csv", None, "missing.csv: no such file"),
        (".", None, "is a directory"),
        ("good.csv", "Nope", "no column named 'Nope'"),
    ],
)
def test_a_missing_file_a_folder_or_an_unknown_column_is_refused(
    tmp_path: Path, target: str, column: str | None, needle: str
) -> None:
    (tmp_path / "good.csv").write_text(f"id\n{A}\n", encoding="utf-8")
    rig = Rig(tmp_path)
    with pytest.raises(InputError, match=needle):
        rig.run(tmp_path / target, column=column)
    assert rig.record.requests == 0
