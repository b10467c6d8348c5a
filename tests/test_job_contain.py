"""Containment over a Job: confirm, disable and revoke sessions together; its undo, verify
and replay of one action."""

from __future__ import annotations

import io
import math
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from batcher.actions import CONTAIN
from batcher.cli.render import render_summary, render_verify
from batcher.errors import LedgerError
from batcher.job.ledgers import undo_ledger
from batcher.job.summary import Summary
from batcher.job.undo import undo_actions
from batcher.report.files import read_report
from batcher.simulator import DirectoryUser
from tests.helpers import Hooked, Rig, counts, ids, report_frame, sim_settings, states, write_ids

CONFIRM = "confirmCompromised"
MEMBERS = 40
# The simulator's directory writes as fast as the run sends them: no 429 with its Retry-After.
FAST_WRITES = sim_settings(directory_writes_per_second=5000.0, directory_writes_burst=200)


def _directory() -> tuple[list[DirectoryUser], list[DirectoryUser], DirectoryUser]:
    """Members (the last one disabled before the run) and two guests, by object ID."""
    values = ids(MEMBERS + 2, seed=11)
    members = [
        DirectoryUser(id=uid, userPrincipalName=f"user{n}@contoso.com")
        for n, uid in enumerate(values[:MEMBERS])
    ]
    members[-1].accountEnabled = False  # disabled by someone before the run
    guests = [
        DirectoryUser(
            id=uid, userPrincipalName=f"g{n}_fabrikam.com#EXT#@contoso.com", userType="Guest"
        )
        for n, uid in enumerate(values[MEMBERS:])
    ]
    return members, guests, members[-1]


def _contained(
    tmp_path: Path, **sim: object
) -> tuple[Rig, list[DirectoryUser], list[DirectoryUser], Summary]:
    members, guests, _ = _directory()
    rig = Rig(tmp_path, sim=FAST_WRITES.model_copy(update=sim), users=members + guests)
    path = write_ids(tmp_path / "ids.csv", [u.id for u in members + guests])
    return rig, members, guests, rig.run(path, actions=CONTAIN)


def test_containment_disables_before_revoking_skips_guests_where_it_must_and_says_what_stays(
    tmp_path: Path,
) -> None:
    members, guests, before = _directory()
    rig = Rig(tmp_path, sim=FAST_WRITES, users=members + guests)
    previews: list[Summary] = []
    path = write_ids(tmp_path / "ids.csv", [u.id for u in members + guests])
    summary = rig.run(path, actions=CONTAIN, confirm=lambda p: previews.append(p) or True)

    plan = previews[0].to_json()["actions"]  # what the operator was asked to agree to
    assert list(plan) == ["disable", "revoke-sessions", "confirm"]  # each user's safe order
    assert {a: (p["to_send"], p["skipped"], p["requests"]) for a, p in plan.items()} == {
        "disable": (42, 0, 3),  # guests are disabled too: 20 to a JSON batch
        "revoke-sessions": (40, 2, 2),
        "confirm": (40, 2, 1),  # 60 IDs to a list
    }
    assert {a: p["undo"] for a, p in plan.items()} == {
        "disable": "enable",
        "revoke-sessions": None,
        "confirm": "dismiss",
    }
    done = {a.name: (a.done, a.skipped, a.failed) for a in summary.actions}
    assert done == {"disable": (42, 0, 0), "revoke-sessions": (40, 2, 0), "confirm": (40, 2, 0)}
    record = rig.record
    assert all(record.operations(u.id) == ["disable", "revoke"] for u in members)
    assert all(record.operations(u.id) == ["disable"] for u in guests)  # disabled anyway
    assert record.revoked_guests == [] and sorted(record.accepted[CONFIRM]) == sorted(
        u.id for u in members
    )
    assert all(not u.accountEnabled for u in members + guests)
    report = report_frame(rig.ledger_for())
    assert report.height == 3 * 42  # one row per user per action
    skipped = report.filter(state="skipped")
    assert sorted(skipped["user_id"]) == sorted(2 * [g.id for g in guests])
    reasons = dict(zip(skipped["action"], skipped["error_message"], strict=False))
    assert "home tenant" in reasons["confirm"] and "home tenant" in reasons["revoke-sessions"]
    assert states(rig.ledger_for(), "disable")[before.id] == "done"
    out = io.StringIO()
    render_summary(summary, Console(file=out, width=200))
    text = out.getvalue()
    assert "revoke-sessions: 40 users must sign in again" in text
    assert "cannot be undone" in text and "confirm: 40 users" not in text


def test_an_account_graph_refused_to_disable_is_reported_as_still_enabled(
    tmp_path: Path,
) -> None:
    members, _, _ = _directory()
    admin = DirectoryUser(id=ids(1, seed=12)[0], userPrincipalName="ga@contoso.com")
    admin.privileged = True  # disabling an administrator needs a privileged role
    rig = Rig(tmp_path, sim=FAST_WRITES, users=[*members, admin])
    path = write_ids(tmp_path / "ids.csv", [admin.id] + [u.id for u in members])
    summary = rig.run(path, actions=("disable", "revoke-sessions"), confirm=lambda p: True)

    assert rig.record.operations(admin.id) == ["revoke"] and admin.accountEnabled
    assert summary.report is not None
    report = read_report(Path(summary.report))
    noted = report.filter(pl.col("note").is_not_null())
    assert sorted(noted["action"]) == ["disable", "revoke-sessions"]  # each of the admin's rows
    assert set(noted["user_id"]) == {admin.id}
    assert set(noted["note"]) == {"the account stays enabled: Graph refused to disable it"}
    assert dict(zip(noted["action"], noted["state"], strict=True)) == {
        "disable": "failed",
        "revoke-sessions": "done",
    }
    out = io.StringIO()
    render_summary(summary, Console(file=out, width=200))
    assert (
        "warning: 1 account could not be disabled: it stays enabled, though revoke-sessions "
        "went ahead; see the note column of the report"
    ) in out.getvalue()


def test_a_confirm_ledger_refuses_a_containment_and_a_containment_ledger_refuses_confirm(
    tmp_path: Path,
) -> None:
    members, guests, _ = _directory()
    rig = Rig(tmp_path, sim=FAST_WRITES, users=members + guests)
    path = write_ids(tmp_path / "ids.csv", [u.id for u in members])
    rig.run(path, ledger=rig.ledger_for("confirm"))
    with pytest.raises(LedgerError):
        rig.run(path, actions=CONTAIN, ledger=rig.ledger_for("confirm"))
    rig.run(path, actions=CONTAIN, ledger=rig.ledger_for("contain"))
    writes = len(rig.record.writes)
    with pytest.raises(LedgerError):
        rig.run(path, ledger=rig.ledger_for("contain"))
    assert len(rig.record.writes) == writes
    assert counts(rig.ledger_for("confirm")) == {"confirm": {"done": 40}}


def test_undo_of_a_containment_enables_and_dismisses_but_keeps_sessions_revoked_and_the_disabled(
    tmp_path: Path,
) -> None:
    rig, members, guests, _ = _contained(tmp_path)
    before = members[-1]
    ledger = rig.ledger_for()
    revoked = {u.id: u.signInSessionsValidFromDateTime for u in members}
    assert undo_actions(ledger) == ("enable", "dismiss")

    plan = rig.undo(ledger, dry_run=True)
    offered = {a.name: a.to_send for a in plan.actions}
    assert offered == {"enable": 41, "dismiss": 40}  # not the account disabled before the run
    assert any("1 accounts were already disabled before the run" in n for n in plan.notes)
    assert any("revoked sessions stay revoked" in n for n in plan.notes)

    summary = rig.undo(ledger)
    assert {a.name: a.done for a in summary.actions} == {"enable": 41, "dismiss": 40}
    record = rig.record
    assert before.id not in record.succeeded("enable") and not before.accountEnabled
    assert all(u.accountEnabled for u in [*members[:-1], *guests])
    assert sorted(record.accepted["dismiss"]) == sorted(u.id for u in members)
    assert {u.id: u.signInSessionsValidFromDateTime for u in members} == revoked  # untouched
    assert counts(undo_ledger(ledger)) == {"enable": {"done": 41}, "dismiss": {"done": 40}}


def test_undo_of_revoked_sessions_alone_is_refused(tmp_path: Path) -> None:
    members, _, _ = _directory()
    rig = Rig(tmp_path, sim=FAST_WRITES, users=members)
    rig.run(write_ids(tmp_path / "ids.csv", [u.id for u in members]), actions=("revoke-sessions",))
    with pytest.raises(LedgerError, match="revoked sessions stay revoked"):
        rig.undo(rig.ledger_for())


def test_undo_of_a_dismissal_alone_is_refused_saying_what_stays(tmp_path: Path) -> None:
    members, _, _ = _directory()
    rig = Rig(tmp_path, sim=FAST_WRITES, users=members)
    rig.run(write_ids(tmp_path / "ids.csv", [u.id for u in members]), actions=("dismiss",))
    with pytest.raises(LedgerError, match="dismiss: a dismissal does not restore the earlier"):
        rig.undo(rig.ledger_for())


def test_verify_of_a_containment_reads_the_directory_in_json_batches(tmp_path: Path) -> None:
    rig, _, guests, _ = _contained(tmp_path)
    record = rig.record
    batches, reads = record.batches, record.reads
    result = rig.verify(rig.ledger_for())
    users = MEMBERS + len(guests)
    assert record.batches - batches <= 2 * math.ceil(users / 300)  # disable, revoke-sessions
    assert record.reads - reads >= 1  # riskState, for confirm
    assert result.expected == {
        "disable": "accountEnabled false",
        "revoke-sessions": "signInSessionsValidFromDateTime at or after the request was sent",
        "confirm": "riskState confirmedCompromised",
    }
    got = {a: (c["checked"], c["as_expected"], c["not_read"]) for a, c in result.actions.items()}
    assert got == {"disable": (42, 42, 0), "revoke-sessions": (40, 40, 0), "confirm": (40, 40, 0)}


def test_replay_of_one_action_sends_only_its_failed_steps(tmp_path: Path) -> None:
    members, guests, _ = _directory()
    gone = members[:3]  # deleted from the directory once looked up: their writes answer 404
    rig = Rig(
        tmp_path,
        sim=FAST_WRITES.model_copy(update={"bad_ids": [members[10].id]}),
        users=members + guests,
    )
    rig.events = Hooked()
    rig.events.at("sending", 1, lambda: [rig.sim.directory._by_id.pop(u.id) for u in gone])
    path = write_ids(tmp_path / "ids.csv", [u.id for u in members + guests])
    first = rig.run(path, actions=CONTAIN)
    failed = {a.name: a.failed for a in first.actions}
    assert failed == {"disable": 3, "revoke-sessions": 3, "confirm": 1}

    for user in gone:  # back in the directory
        rig.sim.directory.add(user)
    writes = len(rig.record.writes)
    again = rig.replay(rig.ledger_for(), action="revoke-sessions")
    assert {a.name: a.to_send for a in again.actions} == {
        "disable": 0,
        "revoke-sessions": 3,
        "confirm": 0,
    }
    sent = rig.record.writes[writes:]
    assert sorted((w.op, w.user_id) for w in sent) == sorted(("revoke", u.id) for u in gone)
    assert len(rig.record.accepted[CONFIRM]) == MEMBERS - 1  # the failed confirm stays failed
    ledger = rig.ledger_for()
    assert counts(ledger)["revoke-sessions"] == {"done": 40, "skipped": 2}
    assert counts(ledger)["disable"]["failed"] == 3 and counts(ledger)["confirm"]["failed"] == 1


def test_the_same_containment_after_its_undo_disables_revokes_and_confirms_again(
    tmp_path: Path,
) -> None:
    """A responder who undid by mistake re-runs the command: what the undo reversed is sent
    again, and each user disabled again is revoked again after it: sessions opened while the
    account was enabled would stay valid otherwise."""
    rig, members, guests, _ = _contained(tmp_path)
    before = members[-1]  # disabled before the run: the undo left it disabled
    ledger, path = rig.ledger_for(), tmp_path / "ids.csv"
    rig.undo(ledger)
    assert all(u.accountEnabled for u in [*members[:-1], *guests])
    record = rig.record
    writes, confirmed = len(record.writes), len(record.accepted[CONFIRM])
    on_disk = (ledger.read_bytes(), ledger.stat().st_mtime_ns)

    plan = rig.run(path, actions=CONTAIN, dry_run=True)
    assert {a.name: (a.to_send, a.already_done) for a in plan.actions} == {
        "disable": (41, 1),
        "revoke-sessions": (39, 1),
        "confirm": (40, 0),
    }
    assert (ledger.read_bytes(), ledger.stat().st_mtime_ns) == on_disk  # a dry run writes none
    assert len(record.writes) == writes

    again = rig.run(path, actions=CONTAIN)
    assert {a.name: (a.done, a.already_done) for a in again.actions} == {
        "disable": (41, 1),
        "revoke-sessions": (39, 1),
        "confirm": (40, 0),
    }
    sent = record.writes[writes:]
    assert sorted((w.op, w.user_id) for w in sent) == sorted(
        [("disable", u.id) for u in [*members[:-1], *guests]]
        + [("revoke", u.id) for u in members[:-1]]
    )
    assert all(record.operations(u.id)[-2:] == ["disable", "revoke"] for u in members[:-1])
    assert before.id not in {w.user_id for w in sent}
    assert sorted(record.accepted[CONFIRM][confirmed:]) == sorted(u.id for u in members)
    assert not any(u.accountEnabled for u in members + guests)
    assert counts(ledger)["disable"] == {"done": 42}

    result = rig.verify(ledger)
    got = {a: (c["checked"], c["as_expected"]) for a, c in result.actions.items()}
    assert got == {"disable": (42, 42), "revoke-sessions": (40, 40), "confirm": (40, 40)}
    writes = len(record.writes)
    third = rig.run(path, actions=CONTAIN)  # sent again since the undo: done, for good
    assert third.to_send == 0 and len(record.writes) == writes


def test_verify_says_not_found_for_a_user_the_directory_no_longer_has(tmp_path: Path) -> None:
    members, _, _ = _directory()
    rig = Rig(tmp_path, sim=FAST_WRITES, users=members)
    rig.run(write_ids(tmp_path / "ids.csv", [u.id for u in members]), actions=("disable",))
    gone = members[0]
    rig.sim.directory._by_id.pop(gone.id)  # deleted since the run
    result = rig.verify(rig.ledger_for())
    counted = result.actions["disable"]
    assert (counted["checked"], counted["as_expected"]) == (MEMBERS, MEMBERS - 1)
    assert (counted["not_found"], counted["not_as_expected"], counted["not_read"]) == (1, 0, 0)
    frame = read_report(Path(result.report))
    row = frame.filter(pl.col("user_id") == gone.id).row(0, named=True)
    assert (row["verify_status"], row["observed"]) == ("not_found", "no such user")
    out = io.StringIO()
    render_verify(result, Console(file=out, width=200))
    line = next(x for x in out.getvalue().splitlines() if "no such user" in x)
    assert line.replace("│", " ").split()[-1] == "1"


def test_the_verify_report_says_what_each_action_expects_in_words(tmp_path: Path) -> None:
    rig, _, _, _ = _contained(tmp_path)
    result = rig.verify(rig.ledger_for())
    frame = read_report(Path(result.report))
    expected = dict(frame.select("action", "expected").unique().iter_rows())
    assert expected == {
        "disable": "accountEnabled false",
        "revoke-sessions": "signInSessionsValidFromDateTime at or after the request was sent",
        "confirm": "riskState confirmedCompromised",
    }


def test_verify_counts_each_action_on_its_own(tmp_path: Path) -> None:
    rig, members, _, _ = _contained(tmp_path)
    members[0].accountEnabled = True  # enabled again by someone: disable not as expected
    got = rig.verify(rig.ledger_for())
    assert got.actions["disable"]["not_as_expected"] == 1
    assert (got.actions["confirm"]["checked"], got.actions["confirm"]["as_expected"]) == (40, 40)
    rig.undo(rig.ledger_for())  # enable and dismiss
    undone = rig.verify(undo_ledger(rig.ledger_for()))
    assert (undone.actions["dismiss"]["checked"], undone.actions["dismiss"]["as_expected"]) == (
        40,
        40,
    )
    assert undone.actions["enable"]["checked"] == 41
    assert "confirmed" not in undone.result()  # nothing about one action beside `actions`


def test_containment_of_the_same_users_in_another_ledger_after_an_undo_revokes_again(
    tmp_path: Path,
) -> None:
    """The list copied to another name after an undo: the disables the undo reversed are sent
    again, and so is each of those users' revoke, whatever the first ledger says it did."""
    rig, members, guests, _ = _contained(tmp_path)
    rig.undo(rig.ledger_for())
    writes = len(rig.record.writes)
    copy = write_ids(tmp_path / "copy.csv", [u.id for u in members + guests])

    again = rig.run(copy, actions=CONTAIN, ledger=rig.ledger_for("copy"))

    got = {a.name: (a.done, a.done_elsewhere) for a in again.actions}
    assert got == {"disable": (41, 1), "revoke-sessions": (39, 1), "confirm": (40, 0)}
    sent = rig.record.writes[writes:]
    assert sorted(w.user_id for w in sent if w.op == "revoke") == sorted(u.id for u in members[:-1])


def test_verify_says_not_read_when_the_answer_lacks_the_property_it_checks(tmp_path: Path) -> None:
    rig, _, _, _ = _contained(tmp_path, omit_properties=[])  # its own list, not FAST_WRITES'
    rig.sim.settings.omit_properties.append("signInSessionsValidFromDateTime")

    result = rig.verify(rig.ledger_for())

    counted = result.actions["revoke-sessions"]
    assert (counted["checked"], counted["not_read"], counted["not_as_expected"]) == (40, 40, 0)
    assert result.actions["disable"]["as_expected"] == 42  # the other reads are unaffected
    frame = read_report(Path(result.report)).filter(pl.col("action") == "revoke-sessions")
    assert set(frame["verify_status"]) == {"not_read"}
