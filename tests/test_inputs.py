"""Inputs: kinds of value, column choice, normalisation, validation, de-duplication, accounting."""

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
    REASON_INSIDE,
    REASON_NIL,
    REASON_NOT_GUID,
    REASON_NOT_ID,
    REASON_SEVERAL,
    REASON_SID,
    REASON_UPN,
    FileSummary,
    InputSet,
    header_key,
    kind_of,
    normalise,
    pick_column,
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
        "e,bob@example\n"
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
    with pytest.raises(InputError, match=r"columns 'Left', 'Right' .*--column 'Left'") as caught:
        read_inputs([path])
    # naming one column must not silently drop the other's users: both are offered
    assert "--column 'Right'" in str(caught.value)
    assert "run once with each" in str(caught.value)


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
    path = _write(tmp_path, "x.csv", "id\nbob@example\nn/a\n@SUM(1+1)\n")
    with pytest.raises(InputError, match="holds no valid user ID"):
        read_inputs([path])


def test_cap_sized_export_warns(tmp_path: Path) -> None:
    ids = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(1, 2501)]
    path = _write(tmp_path, "portal.csv", "User ID\n" + "\n".join(ids) + "\n")
    result = read_inputs([path])
    assert any("2,500 rows" in w and "cut short" in w for w in result.warnings)


# -- properties ---------------------------------------------------------------------------------

_POOL = [A, B, C, "0b4bc1f2-63a4-4e6a-9b0f-2e58c4e8ab01"]
_UPNS = [
    "ava@contoso.example",
    "o'brien@contoso.example",
    "alex_fabrikam.example#EXT#@contoso.onmicrosoft.com",
    "bo+news@contoso.example",
]
_SIDS = ["S-1-5-21-1004336348-1177238915-682003330-1104", "S-1-5-21-1-2-3-500"]
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


def _upn_variant(upn: str, form: int, edge: str) -> str:
    """One UPN or e-mail address written one of the ways mail tools and people write it."""
    forms = [
        upn,
        upn.upper(),
        f"mailto:{upn}",
        f"SMTP:{upn}",
        f"Ava Stone <{upn}>",
        f'"Stone, Ava" <{upn.upper()}>',
        f"{edge}{upn}{edge}",
    ]
    return forms[form % len(forms)]


def _sid_variant(sid: str, form: int, edge: str) -> str:
    return [sid, sid.lower(), f"{edge}{sid}{edge}"][form % 3]


_JUNK = st.sampled_from(
    [
        "",
        "n/a",
        NIL_GUID,
        "1e250c70d-ff6-4e52-8690-a9c144e7cf0f",
        A[:-1],
        f"{A};Ava",
        f"{A}, ava@contoso.example",
        "urn:uuid:",
        "@SUM(1+1)",
        "ava@contoso",
        "ava stone@contoso.example",
        "S-1-5-18",
        "S-1-5-21-1-2-3",
    ]
)
_CELL = st.one_of(
    st.builds(_variant, st.sampled_from(_POOL), st.integers(0, 6), st.sampled_from(_EDGES)),
    st.builds(_upn_variant, st.sampled_from(_UPNS), st.integers(0, 6), st.sampled_from(_EDGES)),
    st.builds(_sid_variant, st.sampled_from(_SIDS), st.integers(0, 2), st.sampled_from(_EDGES)),
    _JUNK,
    st.none(),
)
_TOKENS = st.sampled_from(
    [
        *_EDGES,
        "urn:uuid:",
        "URN:UUID:",
        "mailto:",
        "SMTP:",
        "<",
        ">",
        ",",
        ";",
        "-",
        "@",
        "a@b.co",
        "s-1-5-21-",
        "S-1-5-21-1-2-3-4",
        A,
        A.upper(),
        A.replace("-", ""),
        "0",
        "f",
    ]
)
_UPN_ORACLE = re.compile(
    r"[a-z0-9_][a-z0-9!#$%&'*+/=?^_`{|}~-]*(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}"
)


def _oracle(cell: str | None) -> tuple[str, str] | None:
    """(kind, value) a cell should become, written without Polars: the properties' reference."""
    if cell is None:
        return None
    value = cell.lower()
    edge = "".join(_EDGES) + " \r\n"
    named = re.fullmatch(rf"[^<>]*<([^<>]*)>[{re.escape(edge)}]*", value)
    value = named.group(1) if named else value
    while True:
        shorter = value.strip(edge)
        for prefix in ("urn:uuid:", "mailto:", "smtp:"):
            shorter = shorter.removeprefix(prefix)
        if shorter == value:
            break
        value = shorter
    if re.fullmatch(r"[0-9a-f]{32}", value):
        value = "-".join([value[:8], value[8:12], value[12:16], value[16:20], value[20:]])
    if re.fullmatch(GUID_PATTERN, value) and value != NIL_GUID:
        return "guid", value
    if _UPN_ORACLE.fullmatch(value):
        return "upn", value
    if re.fullmatch(r"s-1-5-21-[0-9]+-[0-9]+-[0-9]+-[0-9]+", value):
        return "sid", "S" + value[1:]
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_TOKENS, st.text(max_size=4)), max_size=8).map("".join))
@example(f"urn:uuid: urn:uuid:{A}")
@example(f"{{({A.replace('-', '')})}}")
@example("Ava <mailto:Ava@Contoso.Example>")
@example("s-1-5-21-1-2-3-4")
def test_normalisation_is_idempotent(value: str) -> None:
    once = _norm([value])
    assert _norm(once) == once


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_CELL, min_size=1, max_size=30), min_size=1, max_size=3))
def test_every_row_is_counted_once_and_the_first_occurrence_wins(
    files: list[list[str | None]],
) -> None:
    """Mixed object IDs, UPNs, SIDs and junk: each kind de-duplicated, first occurrence kept."""
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
    first: dict[tuple[str, str], tuple[str, int]] = {}
    for path, cells in zip(paths, files, strict=True):
        for row, cell in enumerate(cells, start=1):
            found = _oracle(cell)
            if found is not None:
                first.setdefault(found, (str(path), row))
    assert result.ids.rows() == [(v, f, r) for (k, v), (f, r) in first.items() if k == "guid"]
    assert result.identities.rows() == [
        (v, k, f, r) for (k, v), (f, r) in first.items() if k != "guid"
    ]
    rows = sum(len(cells) for cells in files)
    invalid = sum(1 for cells in files for cell in cells if _oracle(cell) is None)
    assert (result.rows, result.invalid, result.valid) == (rows, invalid, len(first))
    assert result.rows == result.valid + result.duplicates + result.invalid + result.skipped
    for summary, cells in zip(result.files, files, strict=True):
        assert summary.rows == len(cells)
        assert summary.rows == summary.valid + summary.duplicates + summary.invalid
        assert summary.skipped == 0


def test_fast_and_full_paths_agree_on_the_first_occurrence(tmp_path: Path) -> None:
    path = _write(tmp_path, "ids.csv", f"id\n{{{A}}}\n{A.upper()}\n{B}\n urn:uuid:{B}\n")
    result = read_inputs([path])
    assert result.ids.rows() == [(A, str(path), 1), (B, str(path), 3)]
    assert [f.duplicates for f in result.files] == [2]


def test_mostly_invalid_column_warns_to_check_the_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", f"id\n{A}\nnope\nnada\n")
    result = read_inputs([path])
    (warning,) = [
        w for w in result.warnings if "2 of 3 values in column 'id' are not valid IDs" in w
    ]
    assert "rejects file" in warning and "--column NAME" in warning
    assert (result.rows, result.valid, result.invalid) == (3, 1, 2)  # counted as before
    clean = read_inputs([_write(tmp_path, "y.csv", f"id\n{A}\n{B}\nnope\n")])
    assert clean.warnings == ()


def test_header_key_ignores_case_spacing_punctuation_and_utc_suffix() -> None:
    assert header_key("RiskLastUpdatedDateTime [UTC]") == "risklastupdateddatetime"
    assert header_key(" User ID ") == header_key("user_id") == header_key("UserId") == "userid"
    assert header_key("id_duplicated_0") == "id"


# -- kinds of value: UPNs and e-mail addresses, SIDs ---------------------------------------------

S1 = "S-1-5-21-1004336348-1177238915-682003330-1104"


def _column(tmp_path: Path, header: str, cells: list[str], name: str = "x.csv") -> Path:
    path = tmp_path / name
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([header, "Note"])
        writer.writerows([cell, "x"] for cell in cells)
    return path


def _reasons(result: InputSet) -> dict[int, str]:
    rows = result.rejects.select("source_row", "reason").rows()
    return {row: reason for row, reason in rows}


def test_upns_and_addresses_in_every_written_form_are_normalised(tmp_path: Path) -> None:
    cells = {
        "  Ava.Stone@Contoso.Example\u00a0": "ava.stone@contoso.example",
        "mailto:bo@contoso.example": "bo@contoso.example",
        "SMTP:Cy@Contoso.Example": "cy@contoso.example",
        "smtp:di@contoso.example": "di@contoso.example",
        "Eve Stone <Eve.Stone@Contoso.Example>": "eve.stone@contoso.example",
        '"Stone, Fay" <fay@contoso.example>': "fay@contoso.example",
        "'o'brien@contoso.example'": "o'brien@contoso.example",
        "gus_fabrikam.example#EXT#@contoso.onmicrosoft.com": (
            "gus_fabrikam.example#ext#@contoso.onmicrosoft.com"
        ),
        "hal+alerts@contoso.example": "hal+alerts@contoso.example",
    }
    result = read_inputs([_column(tmp_path, "UserPrincipalName", list(cells))])
    assert result.identities.select("input_value", "kind").rows() == [
        (value, "upn") for value in cells.values()
    ]
    assert result.identities.get_column("source_row").to_list() == list(range(1, 10))
    assert (result.rows, result.valid, result.invalid, result.ids.height) == (9, 9, 0, 0)


def test_a_formula_or_a_broken_address_is_not_a_upn(tmp_path: Path) -> None:
    cells = [
        "@SUM(1+1)",
        "=1+1@contoso.example",
        "ava@contoso",
        "ava stone@contoso.example",
        "ok@x.io",
    ]
    result = read_inputs([_column(tmp_path, "Mail", cells)])
    assert _reasons(result) == {1: REASON_NOT_ID, 2: REASON_UPN, 3: REASON_UPN, 4: REASON_NOT_ID}
    assert REASON_NOT_GUID == REASON_NOT_ID  # the old name stays importable
    assert "resolve it" not in REASON_UPN


def test_domain_user_sids_are_valid_and_other_sids_say_why(tmp_path: Path) -> None:
    cells = [S1.lower(), " S-1-5-21-1-2-3-500 ", "S-1-5-18", "S-1-5-21-1-2-3", "S-1-12-1-1-2-3-4"]
    result = read_inputs([_column(tmp_path, "AccountSid", cells)])
    assert result.identities.select("input_value", "kind").rows() == [
        (S1, "sid"),
        ("S-1-5-21-1-2-3-500", "sid"),
    ]
    assert _reasons(result) == {3: REASON_SID, 4: REASON_SID, 5: REASON_SID}
    assert result.files[0].column_reason == "header 'AccountSid' is a known SID column name"


def test_each_kind_is_de_duplicated_on_its_own_terms(tmp_path: Path) -> None:
    one = [
        A,
        "ava@contoso.example",
        S1,
        A.upper(),
        "AVA@Contoso.Example",
        "Ava <ava@contoso.example>",
    ]
    two = [S1.lower(), " ava@contoso.example ", f"{{{A}}}", "bo@contoso.example"]
    first = _column(tmp_path, "UserId", one, "one.csv")
    second = _column(tmp_path, "UserId", two, "two.csv")
    result = read_inputs([first, second])
    assert result.ids.rows() == [(A, str(first), 1)]
    assert result.identities.rows() == [
        ("ava@contoso.example", "upn", str(first), 2),
        (S1, "sid", str(first), 3),
        ("bo@contoso.example", "upn", str(second), 4),
    ]
    assert [(f.valid, f.duplicates, f.invalid) for f in result.files] == [(3, 3, 0), (1, 3, 0)]
    assert result.valid == result.ids.height + result.identities.height == 4


def test_values_holding_several_ids_or_a_guid_among_text_say_so(tmp_path: Path) -> None:
    cells = [f"{A}, {B}", "ava@contoso.example;bo@contoso.example", f"{A};Ava", C]
    result = read_inputs([_column(tmp_path, "UserId", cells)])
    assert _reasons(result) == {1: REASON_SEVERAL, 2: REASON_SEVERAL, 3: REASON_INSIDE}


def test_kind_of_names_each_kind_after_normalising() -> None:
    values = [A.upper(), "SMTP:Ava@Contoso.Example", S1.lower(), NIL_GUID, "@SUM(1+1)", None]
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    kinds = frame.select(kind_of(normalise(pl.col("v")))).to_series().to_list()
    assert kinds == ["guid", "upn", "sid", None, None, None]


def test_guid_only_input_has_an_empty_identities_frame_with_its_schema(tmp_path: Path) -> None:
    result = read_inputs([_column(tmp_path, "UserId", [A, B])])
    assert result.identities.height == 0
    assert result.identities.schema == pl.Schema(
        {
            "input_value": pl.String,
            "kind": pl.String,
            "source_file": pl.String,
            "source_row": pl.Int64,
        }
    )
    assert result.ids.columns == ["user_id", "source_file", "source_row"]
    assert result.files[0].skipped == result.skipped == 0
    # built without identities (as an undo builds one from a ledger), it has the same empty frame
    built = InputSet(ids=result.ids, rejects=result.rejects, files=result.files)
    assert built.identities.schema == result.identities.schema
    assert isinstance(built.files[0], FileSummary) and built.valid == 2


# -- column choice among object IDs, UPNs, e-mail addresses and SIDs -----------------------------


def test_upn_column_is_chosen_by_a_known_header_and_never_the_sender(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "clicks.csv",
        "Sender,Recipient,Subject\n"
        "billing@bad.example,ava@contoso.example,Invoice\n"
        "billing@bad.example,bo@contoso.example,Invoice\n",
    )
    result = read_inputs([path])
    assert result.files[0].column == "Recipient"
    assert result.files[0].column_reason == "header 'Recipient' is a known user e-mail column name"


def test_upn_or_sid_column_is_chosen_by_hit_rate_without_a_known_header(tmp_path: Path) -> None:
    text = "Who,Where\nava@contoso.example,Lisbon\nbo@contoso.example,Porto\nn/a,Faro\n"
    result = read_inputs([_write(tmp_path, "who.csv", text)])
    assert result.files[0].column == "Who"
    assert result.files[0].column_reason == (
        "column 'Who' holds the most UPNs or e-mail addresses (67% of sampled rows)"
    )
    sids = read_inputs([_write(tmp_path, "sids.csv", f"Account,Where\n{S1},Lisbon\n")])
    assert "holds the most on-premises SIDs (100%" in sids.files[0].column_reason


def test_object_id_column_wins_over_a_upn_column(tmp_path: Path) -> None:
    portal = _write(
        tmp_path,
        "portal.csv",
        f"User,Username,User ID\nAva,ava@contoso.example,{A}\nBo,bo@contoso.example,{B}\n",
    )
    result = read_inputs([portal])
    assert result.files[0].column == "User ID"
    assert result.identities.height == 0
    by_rate = _write(tmp_path, "rate.csv", f"Mailbox,Who\nava@contoso.example,{A}\n")
    assert read_inputs([by_rate]).files[0].column == "Who"


def test_a_few_stray_guids_do_not_beat_a_full_upn_column(tmp_path: Path) -> None:
    rows = [f"u{n}@contoso.example,{A if n == 0 else 'ok'}" for n in range(10)]
    result = read_inputs([_write(tmp_path, "x.csv", "Account,Comment\n" + "\n".join(rows) + "\n")])
    assert result.files[0].column == "Account"
    assert result.identities.height == 10


def test_a_mixed_column_gives_each_value_its_own_kind(tmp_path: Path) -> None:
    sample = pl.DataFrame({"Who": [A, "ava@contoso.example", S1, "n/a"], "Note": ["x"] * 4})
    name, reason = pick_column(tmp_path / "x.csv", sample, None)
    assert name == "Who"
    assert reason.startswith("column 'Who' holds the most")
    result = read_inputs([_column(tmp_path, "Who", [A, "ava@contoso.example", S1, "n/a"])])
    assert result.ids.get_column("user_id").to_list() == [A]
    assert result.identities.get_column("kind").to_list() == ["upn", "sid"]


def test_a_sender_column_alone_is_not_chosen(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", "SenderFromAddress,Subject\nbad@evil.example,Hi\n")
    with pytest.raises(InputError, match="found no column of user IDs, UPNs"):
        read_inputs([path])


def test_an_ambiguous_column_option_offers_every_match(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", f"User Id,UserId\n{A},{B}\n")
    with pytest.raises(InputError, match="--column 'user_id' matches 'User Id', 'UserId'") as e:
        read_inputs([path], column="user_id")
    assert "--column 'User Id' or --column 'UserId'" in str(e.value)
    assert "run once with each" in str(e.value)
