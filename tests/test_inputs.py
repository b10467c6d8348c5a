"""Inputs: column choice, normalisation, validation, de-duplication and accounting."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from batcher.errors import InputError
from batcher.inputs import (
    REASON_EMPTY,
    REASON_NIL,
    REASON_NOT_GUID,
    REASON_UPN,
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
