"""Every export shape: detected from its bytes, read into the right column, counted exactly."""

from __future__ import annotations

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
from batcher.inputs import REASON_EMPTY, REASON_NIL, REASON_NOT_GUID, REASON_UPN, read_inputs

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
}


# fixtures read without --column (graph_users_array.json has two "id" fields: it needs one)
AUTO = sorted(key for key in EXPECTED if "#" not in key)


def test_every_fixture_has_a_shape_and_an_expectation() -> None:
    on_disk = {p.name for p in INPUTS.iterdir()} - {"expected.json", "make_fixtures.py"}
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
    counts = (summary.rows, summary.valid, summary.duplicates, summary.invalid)
    assert counts == (want["rows"], want["valid"], want["duplicates"], want["invalid"])
    assert result.rejects.height == want["invalid"]


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
    assert result.rows == sum(EXPECTED[n]["rows"] for n in names)
    assert result.invalid == sum(EXPECTED[n]["invalid"] for n in names)
    assert result.rows == result.valid + result.duplicates + result.invalid


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
    assert reasons == {6: REASON_EMPTY, 7: REASON_UPN, 8: REASON_NIL, 9: REASON_NOT_GUID}
    assert result.rejects.get_column("raw_value").to_list()[1:] == [
        "avery.stone@contoso.example",
        "00000000-0000-0000-0000-000000000000",
        "1e250c70d-ff6-4e52-8690-a9c144e7cf0f",
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
    ],
)
def test_format_comes_from_the_bytes_not_the_extension(
    tmp_path: Path, fixture: str, disguise: str
) -> None:
    shutil.copy(INPUTS / fixture, tmp_path / disguise)
    disguised = read_inputs([tmp_path / disguise])
    assert disguised.files[0].format == read_inputs([INPUTS / fixture]).files[0].format
    assert disguised.ids.get_column("user_id").to_list() == EXPECTED[fixture]["ids"]


def test_gzip_of_every_text_shape_reads_like_the_plain_file(tmp_path: Path) -> None:
    plain = [n for n in AUTO if not SHAPES[n].startswith(("Parquet", "Excel", "gz"))]
    for name in plain:
        if (INPUTS / name).read_bytes()[:2] == b"\x1f\x8b":
            continue
        packed = tmp_path / f"{name}.gz"
        packed.write_bytes(gzip.compress((INPUTS / name).read_bytes()))
        got = read_inputs([packed])
        assert got.ids.get_column("user_id").to_list() == EXPECTED[name]["ids"], name
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


def _raises(tmp_path: Path, name: str, data: bytes, match: str, column: str | None = None) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=match) as caught:
        read_inputs([path], column)
    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


A = "1e250c70-dff6-4e52-8690-a9c144e7cf0f"
B = "8db8df93-edd5-4cd5-86b3-bc355166765c"


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
        ("upns.csv", b"id\nava@contoso.example\nbo@contoso.example\n", "holds no valid user ID"),
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
    assert (result.rows, result.valid, result.invalid) == (3, 2, 1)
    assert result.rejects.get_column("reason").to_list() == [REASON_UPN]


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
