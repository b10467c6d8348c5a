"""Inputs: column choice, normalisation, validation, de-duplication and accounting."""

from __future__ import annotations

import csv
import re
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batcher.errors import InputError
from batcher.inputs import (
    GUID_PATTERN,
    NIL_GUID,
    REASON_EMPTY,
    REASON_NIL,
    REASON_NOT_GUID,
    REASON_UPN,
    header_key,
    normalise,
    read_inputs,
)

A = "1e250c70-dff6-4e52-8690-a9c144e7cf0f"
B = "8db8df93-edd5-4cd5-86b3-bc355166765c"
C = "5ba68dd7-a280-4d1d-9057-e02036f41959"


def _norm(values: list[str | None]) -> list[str | None]:
    return (
        pl.DataFrame({"v": values}, schema={"v": pl.String})
        .select(normalise(pl.col("v")))["v"]
        .to_list()
    )


def test_normalise_cleans_every_known_wrapping() -> None:
    raw = [
        f"  {A.upper()} ",
        "{" + A + "}",
        f"({A})",
        f'"{A}"',
        f"urn:uuid:{A}",
        f"\u00a0\u200b{A}\ufeff",
        A.replace("-", ""),
        A.replace("-", "").upper(),
    ]
    assert _norm(raw) == [A] * len(raw)  # type: ignore[arg-type]


def test_misplaced_hyphens_are_not_repaired() -> None:
    wrong = "1e250c70d-ff6-4e52-8690-a9c144e7cf0f"
    path_values = _norm([wrong])
    assert path_values == [wrong]


def _write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding, newline="")
    return path


def test_every_row_is_valid_duplicate_or_invalid(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "ids.csv",
        "name,id\n"
        f"a,{A}\n"
        f"b,{A.upper()}\n"
        f"c,{B}\n"
        "d,\n"
        "e,bob@example.com\n"
        "f,00000000-0000-0000-0000-000000000000\n"
        "g,nope\n"
        f"h,{{{C}}}\n",
    )
    result = read_inputs([path])
    assert result.rows == 8
    assert result.valid == 3
    assert result.duplicates == 1
    assert result.invalid == 4
    assert result.ids.get_column("user_id").to_list() == [A, B, C]
    assert result.ids.get_column("source_row").to_list() == [1, 3, 8]
    reasons = dict(
        zip(
            result.rejects.get_column("source_row").to_list(),
            result.rejects.get_column("reason").to_list(),
            strict=True,
        )
    )
    assert reasons == {4: REASON_EMPTY, 5: REASON_UPN, 6: REASON_NIL, 7: REASON_NOT_GUID}


def test_duplicates_across_files_keep_the_first_occurrence(tmp_path: Path) -> None:
    one = _write(tmp_path, "one.csv", f"id\n{A}\n{B}\n")
    two = _write(tmp_path, "two.csv", f"id\n{B.upper()}\n{C}\n")
    result = read_inputs([one, two])
    assert result.ids.rows() == [(A, str(one), 1), (B, str(one), 2), (C, str(two), 2)]
    assert [f.duplicates for f in result.files] == [0, 1]


def test_known_alias_beats_other_guid_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "la.csv", f"TenantId,CorrelationId,Id\n{B},{C},{A}\n")
    result = read_inputs([path])
    assert result.files[0].column == "Id"
    assert result.ids.get_column("user_id").to_list() == [A]


def test_guid_hit_rate_picks_the_column_but_never_a_tenant_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", f"TenantId,Who,Note\n{B},{A},x\n{B},{C},y\n")
    result = read_inputs([path])
    assert result.files[0].column == "Who"
    assert "holds the most GUIDs" in result.files[0].column_reason


def test_two_equally_good_columns_are_a_tie_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", f"Left,Right\n{A},{B}\n")
    with pytest.raises(InputError, match=r"columns 'Left', 'Right' .*--column 'Left'"):
        read_inputs([path])


def test_column_option_matches_normalised_headers(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", f"Manager Id,User Id\n{A},{B}\n")
    assert read_inputs([path], column="manager id").ids.get_column("user_id").to_list() == [A]


def test_powershell_type_line_and_semicolons(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "ps.csv",
        "#TYPE Selected.Microsoft.Graph.PowerShell.Models.MicrosoftGraphUser\n"
        f'"Id";"DisplayName"\n"{A}";"Ava; Jr"\n"{B}";"Bo"\n',
    )
    result = read_inputs([path])
    assert result.ids.get_column("user_id").to_list() == [A, B]


def test_header_less_list(tmp_path: Path) -> None:
    path = _write(tmp_path, "list.txt", f"{A}\n{B}\n\n{A}\n")
    result = read_inputs([path])
    assert result.ids.get_column("user_id").to_list() == [A, B]
    assert (result.rows, result.valid, result.duplicates, result.invalid) == (4, 2, 1, 1)


def test_utf16_with_bom(tmp_path: Path) -> None:
    path = _write(tmp_path, "u16.csv", f"\ufeffId\r\n{A}\r\n{B}\r\n", encoding="utf-16-le")
    assert read_inputs([path]).ids.get_column("user_id").to_list() == [A, B]


def test_a_file_with_no_valid_id_in_its_id_column_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", "id\nbob@example.com\nalice@example.com\n")
    with pytest.raises(InputError, match="holds no valid user ID"):
        read_inputs([path])


def test_cap_sized_export_warns(tmp_path: Path) -> None:
    ids = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(1, 2501)]
    path = _write(tmp_path, "portal.csv", "User ID\n" + "\n".join(ids) + "\n")
    result = read_inputs([path])
    assert any("2,500 rows" in w and "cut short" in w for w in result.warnings)


# -- properties ---------------------------------------------------------------------------------

_POOL = [A, B, C, "0b4bc1f2-63a4-4e6a-9b0f-2e58c4e8ab01"]
_EDGES = [" ", "\t", "\u00a0", "\u200b", "\ufeff", '"', "'", "{", "}", "(", ")", "`"]


def _variant(guid: str, form: int, edge: str) -> str:
    """One ID written one of the ways exports and people write it."""
    forms = [
        guid,
        guid.upper(),
        guid.replace("-", ""),
        "{" + guid.upper() + "}",
        f"urn:uuid:{guid}",
        f"{edge}{guid}{edge}",
        f"({guid.replace('-', '').upper()})",
    ]
    return forms[form % len(forms)]


_JUNK = st.sampled_from(
    [
        "",
        "n/a",
        "ava@contoso.example",
        NIL_GUID,
        "1e250c70d-ff6-4e52-8690-a9c144e7cf0f",
        A[:-1],
        f"{A};Ava",
        "urn:uuid:",
    ]
)
_CELL = st.one_of(
    st.builds(_variant, st.sampled_from(_POOL), st.integers(0, 6), st.sampled_from(_EDGES)),
    _JUNK,
    st.none(),
)
_TOKENS = st.sampled_from(
    [*_EDGES, "urn:uuid:", "URN:UUID:", "-", "@", A, A.upper(), A.replace("-", ""), "0", "f"]
)


def _oracle(cell: str | None) -> str | None:
    """What a cell should become, written without Polars: the reference for the properties."""
    if cell is None:
        return None
    value = cell.lower()
    edge = "".join(_EDGES) + " \r\n"
    while value != (shorter := value.strip(edge).removeprefix("urn:uuid:")):
        value = shorter
    if re.fullmatch(r"[0-9a-f]{32}", value):
        value = "-".join([value[:8], value[8:12], value[12:16], value[16:20], value[20:]])
    ok = re.fullmatch(GUID_PATTERN, value) and value != NIL_GUID
    return value if ok else None


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_TOKENS, st.text(max_size=4)), max_size=8).map("".join))
@example(f"urn:uuid: urn:uuid:{A}")
@example(f"{{({A.replace('-', '')})}}")
def test_normalisation_is_idempotent(value: str) -> None:
    once = _norm([value])
    assert _norm(once) == once


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_CELL, min_size=1, max_size=30), min_size=1, max_size=3))
def test_every_row_is_counted_once_and_the_first_occurrence_wins(
    files: list[list[str | None]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for n, cells in enumerate(files):
            path = Path(tmp) / f"export{n}.csv"
            with path.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh, quoting=csv.QUOTE_ALL)
                writer.writerow(["UserId", "Note"])
                writer.writerows([cell, "x"] for cell in cells)
            paths.append(path)
        if any(all(_oracle(c) is None for c in cells) for cells in files):
            with pytest.raises(InputError, match="holds no valid user ID"):
                read_inputs(paths)
            return
        result = read_inputs(paths)
    first: dict[str, tuple[str, int]] = {}
    for path, cells in zip(paths, files, strict=True):
        for row, cell in enumerate(cells, start=1):
            found = _oracle(cell)
            if found is not None:
                first.setdefault(found, (str(path), row))
    assert result.ids.rows() == [(uid, f, r) for uid, (f, r) in first.items()]
    rows = sum(len(cells) for cells in files)
    invalid = sum(1 for cells in files for cell in cells if _oracle(cell) is None)
    assert (result.rows, result.invalid) == (rows, invalid)
    assert result.rows == result.valid + result.duplicates + result.invalid
    for summary, cells in zip(result.files, files, strict=True):
        assert summary.rows == len(cells) == summary.valid + summary.duplicates + summary.invalid


def test_fast_and_full_paths_agree_on_the_first_occurrence(tmp_path: Path) -> None:
    path = _write(tmp_path, "ids.csv", f"id\n{{{A}}}\n{A.upper()}\n{B}\n urn:uuid:{B}\n")
    result = read_inputs([path])
    assert result.ids.rows() == [(A, str(path), 1), (B, str(path), 3)]
    assert [f.duplicates for f in result.files] == [2]


def test_mostly_invalid_column_warns_to_check_the_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", f"id\n{A}\nnope\nnada\n")
    result = read_inputs([path])
    assert any("2 of 3 values in column 'id' are not valid IDs" in w for w in result.warnings)
    clean = read_inputs([_write(tmp_path, "y.csv", f"id\n{A}\n{B}\nnope\n")])
    assert clean.warnings == ()


def test_header_key_ignores_case_spacing_punctuation_and_utc_suffix() -> None:
    assert header_key("RiskLastUpdatedDateTime [UTC]") == "risklastupdateddatetime"
    assert header_key(" User ID ") == header_key("user_id") == header_key("UserId") == "userid"
    assert header_key("id_duplicated_0") == "id"
