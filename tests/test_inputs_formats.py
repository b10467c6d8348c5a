"""Every export shape: detected from its bytes or structure, read into the right column, counted
exactly: exports, incident entities, pasted lists of IDs, workbooks with several sheets."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from batcher.errors import InputError
from batcher.inputs import (
    REASON_EMPTY,
    REASON_NIL,
    REASON_NOT_GUID,
    REASON_NOT_ID,
    REASON_SID,
    InputSet,
    open_table,
    read_inputs,
)

INPUTS = Path(__file__).resolve().parent / "fixtures" / "inputs"
EXPECTED = json.loads((INPUTS / "expected.json").read_text(encoding="utf-8"))

# fixture -> what it proves is recognised (a part of how the file was read)
SHAPES = {
    "entra_portal_risky_users.csv": "CSV (comma-separated, UTF-8 with BOM)",
    "loganalytics_aadriskyusers.csv": "CSV (comma-separated, UTF-8 with BOM)",
    "sentinel_signinlogs.csv": "CSV (comma-separated, UTF-8 with BOM)",
    "winps51_export_csv_type.csv": "CSV (comma-separated, UTF-8)",
    "excel_de_semicolon.csv": "CSV (semicolon-separated, Windows-1252)",
    "kusto_explorer.tsv": "CSV (tab-separated, UTF-8)",
    "pipe_separated.txt": "CSV (pipe-separated, UTF-8)",
    "utf16be_bom.csv": "CSV (comma-separated, UTF-16 BE with BOM)",
    "utf16le_no_bom.csv": "CSV (comma-separated, UTF-16 LE without BOM)",
    "winps51_outfile_table_utf16le.txt": "PowerShell table text (UTF-16 LE with BOM)",
    "winps51_redirect_list_utf16le.txt": "list, one ID per line (UTF-16 LE with BOM)",
    "analyst_list.txt": "list, one ID per line (UTF-8)",
    "adx_aadriskyusers.parquet": "Parquet",
    "graph_riskyusers_page.json": 'JSON {"value": [...]}',
    "graph_users_array.json": "JSON (UTF-8)",
    "ids_array.json": "JSON array of IDs",
    "defender_streaming.ndjson": "NDJSON (UTF-8)",
    "defender_streaming.ndjson.gz": "gzip-compressed NDJSON",
    "portal_download": "gzip-compressed CSV (comma-separated, UTF-8 with BOM)",
    "defender_hunting_export.xlsx": "Excel workbook, sheet 'DefenderHuntingResults'",
    "hunting_two_sheets.xlsx": "Excel workbook, sheet 'Results'",
    "sentinel_incident_entities.json": "Sentinel incident entities (JSON, UTF-8)",
    "defender_incidents.json": "Defender XDR incidents (JSON, UTF-8)",
    "graph_alerts_v2.json": "Graph security alerts_v2 (JSON, UTF-8)",
    "pasted_one_line.txt": "list of IDs separated by commas, semicolons and spaces (UTF-8)",
    "workbook_ids_on_second_sheet.xlsx": (
        "Excel workbook, sheet 'Users' (the first sheet with an ID column)"
    ),
}
ENTITY_FIXTURES = [
    "sentinel_incident_entities.json",
    "defender_incidents.json",
    "graph_alerts_v2.json",
]


# fixtures read without --column (graph_users_array.json has two "id" fields: it needs one)
AUTO = sorted(key for key in EXPECTED if "#" not in key)


def test_every_fixture_has_a_shape_and_an_expectation() -> None:
    files = {p.name for p in INPUTS.iterdir() if p.is_file()}  # not Python's __pycache__
    on_disk = files - {"expected.json", "make_fixtures.py"}
    assert on_disk == set(SHAPES)
    assert {key.split("#")[0] for key in EXPECTED} == set(SHAPES)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_fixture_reads_the_expected_column_ids_and_counts(key: str) -> None:
    name, _, column = key.partition("#")
    want = EXPECTED[key]
    result = read_inputs([INPUTS / name], column or None)
    (summary,) = result.files
    assert SHAPES[name] in summary.format
    assert summary.column == want["column"]
    assert result.ids.get_column("user_id").to_list() == want["ids"]
    identities = [list(row) for row in result.identities.select("input_value", "kind").rows()]
    assert identities == want["identities"]
    counts = (summary.rows, summary.valid, summary.duplicates, summary.invalid, summary.skipped)
    want_counts = (want["rows"], want["valid"], want["duplicates"], want["invalid"])
    assert counts == (*want_counts, want["skipped"])
    assert result.rejects.height == want["invalid"]
    assert summary.rows == summary.valid + summary.duplicates + summary.invalid + summary.skipped


def test_all_fixtures_in_one_run_are_de_duplicated_across_files() -> None:
    names = AUTO
    result = read_inputs([INPUTS / n for n in names])
    first_seen: dict[str, tuple[str, int]] = {}
    for name in names:
        for user_id in EXPECTED[name]["ids"]:
            first_seen.setdefault(user_id, (name, 0))
    assert result.ids.get_column("user_id").to_list() == list(first_seen)
    sources = [Path(f).name for f in result.ids.get_column("source_file").to_list()]
    assert sources == [name for name, _ in first_seen.values()]
    identities: dict[str, str] = {}
    for name in names:
        for value, kind in EXPECTED[name]["identities"]:
            identities.setdefault(value, kind)
    assert result.identities.select("input_value", "kind").rows() == list(identities.items())
    assert result.rows == sum(EXPECTED[n]["rows"] for n in names)
    assert result.invalid == sum(EXPECTED[n]["invalid"] for n in names)
    assert result.skipped == sum(EXPECTED[n]["skipped"] for n in names)
    assert result.rows == result.valid + result.duplicates + result.invalid + result.skipped


def test_the_fixtures_are_exactly_what_the_generator_writes(tmp_path: Path) -> None:
    script = INPUTS / "make_fixtures.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=60)
    for made in tmp_path.iterdir():
        assert made.read_bytes() == (INPUTS / made.name).read_bytes(), made.name


def test_log_analytics_export_skips_tenant_and_correlation_guid_columns() -> None:
    result = read_inputs([INPUTS / "loganalytics_aadriskyusers.csv"])
    assert result.files[0].column == "Id"
    tenant = "65984e65-6b3a-41df-8e24-d109577afdc5"
    assert tenant not in result.ids.get_column("user_id").to_list()


def test_quoted_cells_with_crlf_and_json_do_not_split_rows() -> None:
    result = read_inputs([INPUTS / "sentinel_signinlogs.csv"])
    raw = (INPUTS / "sentinel_signinlogs.csv").read_bytes()
    assert raw.count(b"\r\nReason:") > 0  # the fixture really holds multi-line cells
    assert result.files[0].rows == EXPECTED["sentinel_signinlogs.csv"]["rows"]
    assert result.rejects.get_column("source_row").to_list() == [13]


def test_header_less_list_rejects_say_which_row_and_why() -> None:
    result = read_inputs([INPUTS / "analyst_list.txt"])
    reasons = dict(
        zip(
            result.rejects.get_column("source_row").to_list(),
            result.rejects.get_column("reason").to_list(),
            strict=True,
        )
    )
    assert reasons == {6: REASON_EMPTY, 8: REASON_NIL, 9: REASON_NOT_GUID}
    assert result.rejects.get_column("raw_value").to_list()[1:] == [
        "00000000-0000-0000-0000-000000000000",
        "1e250c70d-ff6-4e52-8690-a9c144e7cf0f",
    ]
    assert result.identities.select("input_value", "source_row").rows() == [
        ("avery.stone@contoso.example", 7)
    ]


def test_graph_page_with_next_link_warns_that_pages_are_missing() -> None:
    result = read_inputs([INPUTS / "graph_riskyusers_page.json"])
    assert any("@odata.nextLink" in w and "every page" in w for w in result.warnings)


def test_workbook_with_two_sheets_warns_which_sheet_was_read() -> None:
    result = read_inputs([INPUTS / "hunting_two_sheets.xlsx"])
    assert result.warnings == (
        f"{INPUTS / 'hunting_two_sheets.xlsx'}: read sheet 'Results' only; "
        "sheet 'Query' was not read",
    )


def test_two_id_fields_at_different_depths_are_a_tie_not_a_guess() -> None:
    with pytest.raises(InputError, match=r"columns 'id', 'manager.id' .*--column 'id'"):
        read_inputs([INPUTS / "graph_users_array.json"])


def test_nested_field_is_found_by_its_last_name_and_by_a_dotted_column() -> None:
    path = INPUTS / "defender_streaming.ndjson"
    by_alias = read_inputs([path])
    by_dotted = read_inputs([path], column="properties.AccountObjectId")
    by_leaf = read_inputs([path], column="AccountObjectId")
    assert by_alias.files[0].column == "properties.AccountObjectId"
    assert by_dotted.ids.equals(by_alias.ids)
    assert by_leaf.ids.equals(by_alias.ids)
    other = read_inputs([path], column="properties.InitiatingProcessAccountObjectId")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    device = [r["properties"].get("InitiatingProcessAccountObjectId") for r in records]
    assert other.ids.get_column("user_id").to_list() == list(dict.fromkeys(filter(None, device)))


@pytest.mark.parametrize(
    ("fixture", "disguise"),
    [
        ("adx_aadriskyusers.parquet", "export.csv"),
        ("defender_streaming.ndjson", "records.csv"),
        ("defender_hunting_export.xlsx", "hunting.txt"),
        ("graph_riskyusers_page.json", "page.tsv"),
        ("portal_download", "portal.csv"),
        ("sentinel_incident_entities.json", "entities.txt"),
        ("pasted_one_line.txt", "ids.csv"),
    ],
)
def test_format_comes_from_the_bytes_not_the_extension(
    tmp_path: Path, fixture: str, disguise: str
) -> None:
    shutil.copy(INPUTS / fixture, tmp_path / disguise)
    disguised = read_inputs([tmp_path / disguise])
    assert disguised.files[0].format == read_inputs([INPUTS / fixture]).files[0].format
    assert disguised.ids.get_column("user_id").to_list() == EXPECTED[fixture]["ids"]
    assert disguised.identities.height == len(EXPECTED[fixture]["identities"])


def test_gzip_of_every_text_shape_reads_like_the_plain_file(tmp_path: Path) -> None:
    plain = [n for n in AUTO if not SHAPES[n].startswith(("Parquet", "Excel", "gz"))]
    for name in plain:
        if (INPUTS / name).read_bytes()[:2] == b"\x1f\x8b":
            continue
        packed = tmp_path / f"{name}.gz"
        packed.write_bytes(gzip.compress((INPUTS / name).read_bytes()))
        got = read_inputs([packed])
        assert got.ids.get_column("user_id").to_list() == EXPECTED[name]["ids"], name
        assert got.identities.height == len(EXPECTED[name]["identities"]), name
        assert got.files[0].format.startswith("gzip-compressed "), name


def test_non_utf8_byte_past_the_sniffed_head_falls_back_to_windows_1252(tmp_path: Path) -> None:
    ids = [f"{n:08x}-0000-4000-8000-{n:012x}" for n in range(1, 9001)]
    rows = [f"{i},Name {n}" for n, i in enumerate(ids)]
    rows.append("a1b2c3d4-0000-4000-8000-000000000001,J\xf6rg")
    path = tmp_path / "late.csv"
    path.write_bytes(("UserId,Name\n" + "\n".join(rows) + "\n").encode("latin-1"))
    assert path.stat().st_size > 256 * 1024
    result = read_inputs([path])
    assert (result.rows, result.valid, result.invalid) == (9001, 9001, 0)


def _raises(
    tmp_path: Path,
    name: str,
    data: bytes,
    match: str,
    column: str | None = None,
    sheet: str | None = None,
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=match) as caught:
        read_inputs([path], column, sheet)
    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


A = "1e250c70-dff6-4e52-8690-a9c144e7cf0f"
B = "8db8df93-edd5-4cd5-86b3-bc355166765c"
C = "5ba68dd7-a280-4d1d-9057-e02036f41959"


@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        ("random.csv", bytes(range(256)) * 8, "holds binary data"),
        ("png.csv", b"\x89PNG\r\n\x1a\n" + bytes(64), "is a PNG image"),
        ("ledger.csv", b"SQLite format 3\x00" + bytes(64), "SQLite database"),
        ("ids.zip", b"", "is a zip archive"),
        ("damaged.csv.gz", b"\x1f\x8b\x08\x00garbage", "damaged gzip"),
        ("empty.csv.gz", gzip.compress(b"", mtime=0), "compressed file is empty"),
        (
            "bad.json",
            b'[{"id": "' + A.encode() + b'"},\n {"id": }]',
            r"line 2, column 9: Expecting value",
        ),
        ("bad.ndjson", f'{{"id": "{A}"}}\n{{"id": "{B}"\n'.encode(), "line 2 is not valid JSON"),
        ("header.csv", b"UserId,Name\r\n", "holds no rows of data"),
        ("empty.json", b"[]", "holds no rows of data"),
        ("empty_page.json", b'{"@odata.context": "x", "value": []}', "holds no rows of data"),
        ("lists.json", b'[{"ids": ["a"]}, {"ids": []}]', "holds no columns of single values"),
        ("ragged.csv", f"UserId,Name\n{A},Ava\n{B},Stone, Bo\n".encode(), "row 2 has more fields"),
        ("tilde.csv", f"UserId~Name\n{A}~Ava\n".encode(), "separator or layout was not recognised"),
        ("ties.csv", f"User ID,UserId\n{A},{B}\n".encode(), "columns 'User ID', 'UserId'"),
        ("twice.csv", f"id,name,id\n{A},x,{B}\n".encode(), "'id', 'id_duplicated_0' share"),
        ("junk.csv", b"id\n@SUM(1+1)\nava@contoso\nS-1-5-18\n", "holds no valid user ID"),
    ],
)
def test_bad_input_is_one_line_naming_the_file_and_what_to_do(
    tmp_path: Path, name: str, data: bytes, match: str
) -> None:
    if name.endswith(".zip"):
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            archive.writestr("ids.csv", f"id\n{A}\n")
        data = (tmp_path / name).read_bytes()
    _raises(tmp_path, name, data, match)


def test_list_column_named_with_column_says_to_use_a_dotted_path(tmp_path: Path) -> None:
    data = json.dumps([{"id": A, "assignedLicenses": [{"skuId": B}]}]).encode()
    _raises(tmp_path, "users.json", data, "holds lists or objects", column="assignedLicenses")


def test_unknown_column_lists_the_columns(tmp_path: Path) -> None:
    _raises(tmp_path, "x.csv", f"UserId,Name\n{A},Ava\n".encode(), "'UserId', 'Name'", "Nope")


def test_the_same_file_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text(f"id\n{A}\n", encoding="utf-8")
    with pytest.raises(InputError, match="given twice"):
        read_inputs([path, tmp_path / "." / "ids.csv"])


def test_a_list_starting_with_a_upn_has_no_header_row_to_lose(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(f"ava@contoso.example\n{A}\n{B}\n", encoding="utf-8")
    result = read_inputs([path])
    assert (result.rows, result.valid, result.invalid) == (3, 3, 0)
    assert result.identities.select("input_value", "source_row").rows() == [
        ("ava@contoso.example", 1)
    ]
    sids = tmp_path / "sids.txt"
    sids.write_text("S-1-5-21-1-2-3-1104\nS-1-5-21-1-2-3-1105\n", encoding="utf-8")
    assert read_inputs([sids]).identities.height == 2


def test_blank_lines_after_the_last_row_are_not_rows(tmp_path: Path) -> None:
    ids = [f"{n:08x}-0000-4000-8000-{n:012x}" for n in range(1, 2501)]
    path = tmp_path / "portal.csv"
    path.write_bytes(
        ("User ID,Name\r\n" + "".join(f"{i},x\r\n" for i in ids) + "\r\n\r\n").encode()
    )
    result = read_inputs([path])
    assert (result.rows, result.invalid) == (2500, 0)
    assert any("exactly 2,500 rows" in w for w in result.warnings)
    listed = tmp_path / "list.txt"
    listed.write_text(f"{A}\n\n{B}\n  \n\n\n", encoding="utf-8")
    result = read_inputs([listed])
    assert (result.rows, result.valid, result.invalid) == (4, 2, 2)  # the inner blank and "  "


def _write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    """A workbook written by the fixture generator's own minimal XLSX writer."""
    spec = importlib.util.spec_from_file_location("make_fixtures", INPUTS / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    make_fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_fixtures)
    make_fixtures.write_xlsx(path, {"Sheet1": rows})
    return path


def test_empty_rows_at_the_end_of_a_sheet_are_not_rows(tmp_path: Path) -> None:
    rows: list[list[object]] = [["UserId", "Note"], [A, "x"], ["", "y"], [B, "z"], ["", ""]]
    result = read_inputs([_write_xlsx(tmp_path / "book.xlsx", [*rows, ["", ""], ["", ""]])])
    assert (result.rows, result.valid, result.invalid) == (3, 2, 1)


def test_a_sheet_without_a_header_row_loses_no_row(tmp_path: Path) -> None:
    result = read_inputs([_write_xlsx(tmp_path / "ids.xlsx", [[A.upper()], ["n/a"], [B], [A]])])
    assert result.ids.get_column("user_id").to_list() == [A, B]
    assert (result.rows, result.duplicates, result.invalid) == (4, 1, 1)
    assert result.files[0].column == "column_1"


def _make_fixtures() -> object:
    """The fixture generator as a module: its XLSX writer and its plain-Python oracle."""
    spec = importlib.util.spec_from_file_location("make_fixtures", INPUTS / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- incident entities --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ENTITY_FIXTURES)
def test_incident_entities_count_every_entity_and_skip_the_non_users(name: str) -> None:
    want = EXPECTED[name]
    result = read_inputs([INPUTS / name])
    (summary,) = result.files
    assert summary.column == want["column"]
    assert summary.skipped == want["skipped"] == result.skipped == 6
    assert summary.rows == summary.valid + summary.duplicates + summary.invalid + summary.skipped
    assert summary.duplicates == 1  # the same user in two alerts, or as account and mailbox
    document = json.loads((INPUTS / name).read_text(encoding="utf-8"))
    flat = []  # every entity, in file order: source_row is the position in this list
    for item in document.get("value", [document]):
        for holder in [item, *item.get("alerts", [])]:
            flat += holder.get("entities", []) + holder.get("evidence", [])
    assert len(flat) == summary.rows
    users = {"account", "mailbox", "user", "userevidence", "mailboxevidence"}
    user_rows = {
        n
        for n, e in enumerate(flat, start=1)
        if str(e.get("kind") or e.get("entityType") or e.get("@odata.type")).split(".")[-1].lower()
        in users
    }
    found = set(result.ids.get_column("source_row")) | set(result.identities["source_row"])
    found |= set(result.rejects.get_column("source_row"))
    assert found <= user_rows


def test_sentinel_accounts_use_aad_user_id_then_upn_then_sid_never_object_guid() -> None:
    path = INPUTS / "sentinel_incident_entities.json"
    entities = json.loads(path.read_text(encoding="utf-8"))["entities"]
    result = read_inputs([path])
    first = entities[0]["properties"]
    assert result.ids.row(0) == (first["aadUserId"], str(path), 1)
    assert first["objectGuid"] not in result.ids.get_column("user_id").to_list()
    assert result.identities.select("input_value", "kind", "source_row").rows() == [
        ("casey.nguyen@contoso.example", "upn", 4),
        ("S-1-5-21-1004336348-1177238915-682003330-1104", "sid", 5),
        ("alex.kim_fabrikam.example#ext#@contoso.onmicrosoft.com", "upn", 6),
    ]
    reasons = dict(result.rejects.select("source_row", "reason").rows())
    assert reasons == {
        12: REASON_SID,  # SYSTEM's well-known SID
        13: "Account entity 'Unknown sign-in' has no aadUserId, accountName@upnSuffix or sid",
    }
    assert "aadUserId (1)" in result.files[0].column_reason


def test_a_single_defender_incident_or_graph_alert_reads_like_a_page(tmp_path: Path) -> None:
    incidents = json.loads((INPUTS / "defender_incidents.json").read_text(encoding="utf-8"))
    alerts = json.loads((INPUTS / "graph_alerts_v2.json").read_text(encoding="utf-8"))
    incident, alert = incidents["value"][0], alerts["value"][1]
    (tmp_path / "incident.json").write_text(json.dumps(incident), encoding="utf-8")
    (tmp_path / "alert.json").write_text(json.dumps(alert), encoding="utf-8")
    one = read_inputs([tmp_path / "incident.json"])
    assert one.files[0].format == "Defender XDR incidents (JSON, UTF-8)"
    assert (one.rows, one.skipped) == (10, 5)
    assert one.identities.get_column("input_value").to_list() == [
        "casey.nguyen@contoso.example",  # the MailBox entity's address
        "dana.okafor@contoso.example",  # a user with only a UPN
        "S-1-5-21-1004336348-1177238915-682003330-1302",  # a user with only a SID
    ]
    other = read_inputs([tmp_path / "alert.json"])
    assert other.files[0].format == "Graph security alerts_v2 (JSON, UTF-8)"
    assert (other.rows, other.skipped, other.invalid) == (8, 2, 1)


def test_column_option_reads_incident_json_as_plain_json(tmp_path: Path) -> None:
    path = INPUTS / "sentinel_incident_entities.json"
    result = read_inputs([path], column="properties.aadUserId")
    assert result.files[0].format == 'JSON {"entities": [...]} (UTF-8)'
    assert result.files[0].skipped == 0
    assert result.files[0].rows == len(json.loads(path.read_text(encoding="utf-8"))["entities"])


def test_an_incident_without_user_entities_says_so(tmp_path: Path) -> None:
    body = {"entities": [{"kind": "Host", "properties": {"hostName": "pc-1"}}] * 2}
    _raises(
        tmp_path,
        "hosts.json",
        json.dumps(body).encode(),
        r"Sentinel incident entities without a user or mailbox entity \(only 2 Host\)",
    )


# -- pasted lists of IDs ------------------------------------------------------------------------


def test_ids_on_one_line_are_every_id_not_a_five_column_csv(tmp_path: Path) -> None:
    ids = [f"{n:08x}-0000-4000-8000-{n:012x}" for n in range(1, 6)]
    path = tmp_path / "ticket.txt"
    path.write_text(",".join(ids) + "\n", encoding="utf-8")
    result = read_inputs([path])
    assert result.ids.select("user_id", "source_row").rows() == [
        (i, n) for n, i in enumerate(ids, 1)
    ]
    assert result.files[0].format == "list of IDs separated by commas (UTF-8)"
    # the old advice was --column 'column_1': it now reads all five as well
    assert read_inputs([path], column="column_1").ids.height == 5


def test_a_pasted_list_over_several_lines_mixes_separators_and_kinds(tmp_path: Path) -> None:
    path = tmp_path / "chat.txt"
    path.write_text(
        f"{A}; {B}\tava@contoso.example\n\n"
        f"Bo Stone <Bo@Contoso.Example>, S-1-5-21-1-2-3-1104 {A.upper()}\n",
        encoding="utf-8",
    )
    result = read_inputs([path])
    summary = result.files[0]
    assert summary.format == (
        "list of IDs separated by commas, semicolons, spaces, tabs and line breaks (UTF-8)"
    )
    assert (summary.rows, summary.valid, summary.duplicates, summary.invalid) == (6, 5, 1, 0)
    assert result.identities.select("input_value", "source_row").rows() == [
        ("ava@contoso.example", 3),
        ("bo@contoso.example", 4),
        ("S-1-5-21-1-2-3-1104", 5),
    ]


def test_a_pasted_list_with_a_typo_keeps_every_id(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(f"{A}, {B}\nn/a, ava@contoso.example\n", encoding="utf-8")
    result = read_inputs([path])
    assert (result.rows, result.valid, result.invalid) == (4, 3, 1)
    assert result.rejects.select("source_row", "raw_value", "reason").rows() == [
        (3, "n/a", REASON_NOT_ID)
    ]


def test_a_header_less_csv_with_data_columns_is_still_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(f"{A},2025-03-14,Ava Stone\n{B},2025-03-15,Bo Stone\n", encoding="utf-8")
    result = read_inputs([path])
    assert result.files[0].format == "header-less CSV (comma-separated, UTF-8)"
    assert (result.files[0].column, result.rows, result.invalid) == ("column_1", 2, 0)
    two = tmp_path / "two.csv"  # two ID columns beside a data column: which is for the operator
    two.write_text(f"{A},2025-03-14,{C}\n{B},2025-03-15,{A}\n", encoding="utf-8")
    with pytest.raises(InputError, match="--column 'column_1' or --column 'column_3'"):
        read_inputs([two])


# -- workbooks with several sheets --------------------------------------------------------------

SECOND = INPUTS / "workbook_ids_on_second_sheet.xlsx"


def test_a_workbook_whose_first_sheet_has_no_id_column_is_read_from_the_next() -> None:
    result = read_inputs([SECOND])
    assert result.files[0].column == "ObjectId"
    assert result.warnings == (
        f"{SECOND}: sheet 'Cover' holds no ID column; read sheet 'Users' instead",
        f"{SECOND}: read sheet 'Users' only; sheet 'Notes' was not read",
    )


def test_sheet_option_reads_that_sheet_whatever_its_case(tmp_path: Path) -> None:
    result = read_inputs([SECOND], sheet="users")
    assert result.files[0].format == "Excel workbook, sheet 'Users'"
    assert result.ids.get_column("user_id").to_list() == EXPECTED[SECOND.name]["ids"]
    assert result.warnings == ()
    table = open_table(INPUTS / "hunting_two_sheets.xlsx", sheet="Query")
    assert table.sample.columns == ["Query"]


def test_sheet_option_errors_list_the_sheets_or_say_it_is_for_workbooks(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no sheet named 'Nope'; its sheets: 'Cover', 'Users'"):
        read_inputs([SECOND], sheet="Nope")
    data = f"UserId\n{A}\n".encode()
    _raises(tmp_path, "ids.csv", data, "--sheet applies to Excel workbooks only", sheet="Users")


def test_the_other_sheets_are_named_in_errors_about_the_column(tmp_path: Path) -> None:
    book = tmp_path / "book.xlsx"
    _make_fixtures().write_xlsx(  # type: ignore[attr-defined]
        book,
        {
            "Cover": [["Incident", "IR-7"], ["Owner", "SOC"]],
            "Users": [["Name"], ["Ava"]],
            "Notes": [["x"]],
        },
    )
    with pytest.raises(InputError) as caught:
        read_inputs([book])
    message = str(caught.value)
    assert message.startswith(f"{book}: found no column of user IDs")
    assert message.endswith(
        "the workbook's other sheets: 'Users', 'Notes'; choose one with --sheet NAME"
    )
    with pytest.raises(InputError, match="other sheets: 'Cover', 'Notes'; choose one with --sheet"):
        read_inputs([book], sheet="Users")


# -- samples ------------------------------------------------------------------------------------


def test_phishing_sample_counts_match_the_plain_python_oracle() -> None:
    path = Path(__file__).resolve().parent.parent / "sample_inputs" / "phishing_recipients.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        cells = [row["Recipient"] for row in csv.DictReader(fh)]
    want = _make_fixtures().expectation("Recipient", cells)  # type: ignore[attr-defined]
    result: InputSet = read_inputs([path])
    (summary,) = result.files
    assert summary.column == "Recipient"  # never the Sender column beside it
    got = (summary.rows, summary.valid, summary.duplicates, summary.invalid)
    assert (
        got == (want["rows"], want["valid"], want["duplicates"], want["invalid"]) == (64, 58, 3, 3)
    )
    assert [list(r) for r in result.identities.select("input_value", "kind").rows()] == want[
        "identities"
    ]
