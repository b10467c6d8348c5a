"""Identities in a run: UPNs, e-mail addresses, aliases and SIDs resolved in a closed directory,
each user acted on once, what could not be used in the rejects, and a resume that looks
nothing up again."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from batcher.errors import AuthError
from batcher.simulator import DirectoryUser
from tests.helpers import Rig, counts, ids, report_frame, runs_of, sim_settings, states

CONFIRM = "confirmCompromised"
X1, X2, X3, X4, XG, XS1, XS2 = ids(7, seed=42)
SID = "S-1-5-21-1004336348-1177238915-682003330-1601"
USERS = [
    DirectoryUser(id=X1, userPrincipalName="m1@contoso.com"),
    DirectoryUser(id=X2, userPrincipalName="m2@contoso.com", mail="mary@contoso.com"),
    DirectoryUser(
        id=X3,
        userPrincipalName="m3@contoso.com",
        proxyAddresses=["SMTP:m3@contoso.com", "smtp:old.m3@contoso.com"],
    ),
    DirectoryUser(id=X4, userPrincipalName="m4@contoso.com", onPremisesSecurityIdentifier=SID),
    DirectoryUser(
        id=XG,
        userPrincipalName="g_fabrikam.com#EXT#@contoso.onmicrosoft.com",
        mail="g@fabrikam.com",
        userType="Guest",
    ),
    DirectoryUser(id=XS1, userPrincipalName="s1@contoso.com", mail="shared@contoso.com"),
    DirectoryUser(id=XS2, userPrincipalName="s2@contoso.com", mail="shared@contoso.com"),
]
VALUES = [
    X1,
    "m1@contoso.com",  # the same user as the row above
    "mary@contoso.com",  # a mail
    "old.m3@contoso.com",  # an old alias
    SID,
    "g@fabrikam.com",  # a guest
    "shared@contoso.com",  # two users have it
    "nobody@contoso.com",  # no one has it
]


def _input(tmp_path: Path) -> Path:
    path = tmp_path / "users.csv"
    path.write_text("user\n" + "\n".join(VALUES) + "\n", encoding="utf-8")
    return path


def test_identities_resolve_with_exact_counts_and_each_user_is_acted_on_once(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, users=USERS)
    summary = rig.run(_input(tmp_path))
    got = summary.inputs
    assert (got.rows, got.valid, got.invalid, got.looked_up) == (8, 8, 0, 7)
    assert (got.resolved, got.guests, got.ambiguous, got.not_found) == (4, 1, 1, 1)
    assert got.users == 5 and got.lookup_requests >= 1
    action = summary.actions[0]
    assert (action.done, action.skipped) == (4, 1)  # the guest's risk is their home tenant's
    assert sorted(rig.record.accepted[CONFIRM]) == sorted([X1, X2, X3, X4])  # each once
    assert states(rig.ledger_for()) == {X1: "done", X2: "done", X3: "done", X4: "done"} | {
        XG: "skipped"
    }
    rows = {r["user_id"]: r for r in report_frame(rig.ledger_for()).iter_rows(named=True)}
    assert rows[X1]["input_value"] == f"{X1}; m1@contoso.com"  # both values that found X1
    assert {uid: rows[uid]["matched_by"] for uid in (X1, X2, X3, X4, XG)} == {
        X1: "object_id",
        X2: "mail",
        X3: "proxy_address",
        X4: "sid",
        XG: "mail",
    }
    assert "home tenant" in str(rows[XG]["error_message"])
    note = [n for n in summary.notes if "could not be resolved" in n]
    assert note and "(1 not found, 1 ambiguous)" in note[0] and str(summary.rejects) in note[0]


def test_rejects_list_identities_not_found_ambiguous_and_guests_with_why(tmp_path: Path) -> None:
    rig = Rig(tmp_path, users=USERS)
    summary = rig.run(_input(tmp_path))
    with Path(summary.rejects or "").open(encoding="utf-8", newline="") as fh:
        rows = {r["raw_value"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"g@fabrikam.com", "shared@contoso.com", "nobody@contoso.com"}
    assert rows["nobody@contoso.com"]["reason"].startswith("not_found: no user has this UPN")
    assert rows["shared@contoso.com"]["reason"].startswith("ambiguous: 2 users match this mail")
    assert (
        XS1 in rows["shared@contoso.com"]["reason"] and XS2 in rows["shared@contoso.com"]["reason"]
    )
    assert rows["g@fabrikam.com"]["reason"].startswith("guest (B2B): skipped for confirm: ")
    assert [rows[v]["row"] for v in ("g@fabrikam.com", "shared@contoso.com")] == ["6", "7"]
    assert {r["source_file"] for r in rows.values()} == {str(_input(tmp_path))}


def test_a_resume_looks_nothing_up_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path, users=USERS)
    path = _input(tmp_path)
    rig.run(path)
    filters, reads = list(rig.record.filters), rig.record.directory_reads
    again = rig.run(path)
    assert rig.record.filters == filters and rig.record.directory_reads == reads
    assert again.inputs.lookup_requests == 0
    assert (again.inputs.resolved, again.inputs.guests, again.inputs.not_found) == (4, 1, 1)
    assert again.actions[0].already_done == 4 and again.to_send == 0
    assert len(rig.record.accepted[CONFIRM]) == 4


def test_a_dry_run_with_identities_is_offline_and_estimates_the_look_ups(tmp_path: Path) -> None:
    rig = Rig(tmp_path, users=USERS)
    summary = rig.run(_input(tmp_path), dry_run=True)
    assert summary.inputs.lookup_requests == 1  # 7 values in 2 filters: one JSON batch
    assert summary.to_send == 1  # only the object ID is known before looking up
    note = [n for n in summary.notes if "need a directory look-up" in n]
    assert note and note[0].startswith("7 identities need a directory look-up")
    assert rig.record.requests == 0 and rig.record.filters == []
    assert not (tmp_path / "ledgers").exists()


def test_a_403_on_look_up_names_user_read_all_and_records_no_run_and_no_step(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, sim=sim_settings(directory_read_denied=True), users=USERS)
    with pytest.raises(AuthError, match=r"User\.Read\.All"):
        rig.run(_input(tmp_path))
    assert rig.record.accepted[CONFIRM] == []
    assert runs_of(rig.ledger_for()) == []
    assert counts(rig.ledger_for()) == {"confirm": {}}


def test_resolve_writes_the_table_and_changes_nothing(tmp_path: Path) -> None:
    from batcher.job.resolve import ResolveOptions, resolve

    rig = Rig(tmp_path, users=USERS)
    out = tmp_path / "table.csv"
    result = resolve(rig.job(()), ResolveOptions((_input(tmp_path),), out), rig.route)
    got = result.inputs
    assert (got.resolved, got.guests, got.ambiguous, got.not_found) == (5, 1, 1, 1)  # X1 too
    assert got.looked_up == 8 and got.lookup_requests >= 1
    with out.open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == [
        "input_value",
        "kind",
        "user_id",
        "user_principal_name",
        "matched_by",
        "outcome",
        "reason",
        "source_file",
        "source_row",
        "user_type",
        "account_enabled",
        "on_premises_sync",
    ]
    by_value = {row["input_value"]: row for row in table}
    assert by_value["old.m3@contoso.com"]["matched_by"] == "proxy_address"
    assert by_value["old.m3@contoso.com"]["user_id"] == X3
    assert by_value["shared@contoso.com"]["outcome"] == "ambiguous"
    assert by_value["nobody@contoso.com"]["outcome"] == "not_found"
    assert by_value[SID]["matched_by"] == "sid"
    assert rig.record.writes == [] and rig.record.accepted[CONFIRM] == []  # read-only
    assert not list(tmp_path.rglob("*.sqlite"))  # no ledger
