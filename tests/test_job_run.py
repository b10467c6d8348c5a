"""`run` over a Job, in-process against the simulator: counts, resumes, faults, stops."""

from __future__ import annotations

import os
import shlex
import sqlite3
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import httpx
import pytest

from batcher.actions import choose
from batcher.auth import StaticToken
from batcher.calls import StopSignal
from batcher.cli.edge import built_in_simulator
from batcher.errors import AuthError, ConfigError, LedgerError
from batcher.job.run import RunOptions, run
from batcher.job.session import Route
from batcher.job.setup import Job, run_scope, tokens_for
from batcher.job.status import status
from batcher.simulator import GraphSimulator
from batcher.simulator.directory import derived_id
from tests.helpers import (
    FAST,
    SAMPLES,
    TEST_TOKEN,
    Hooked,
    Rig,
    counts,
    expected_ids,
    ids,
    report_frame,
    runs_of,
    settings,
    sim_settings,
    states,
    write_ids,
)

ENTRA = SAMPLES / "entra_risky_users.csv"
ANALYST = SAMPLES / "analyst_list.csv"
ENTRA_UPN = "will.upn@example.com"  # the sample's one UPN; the open directory resolves it
CONFIRM = "confirmCompromised"


def entra_users() -> list[str]:
    """The oracle for the entra sample: its object IDs, and the user its UPN resolves to."""
    return [*expected_ids(ENTRA, "User ID"), derived_id(ENTRA_UPN)]


# Each sample's exact counts, by construction of the file (see sample_inputs/).
SAMPLE_COUNTS = {
    "entra_risky_users.csv": dict(
        column="User ID", rows=147, valid=131, duplicates=12, invalid=4, batches=3, identities=1
    ),
    "analyst_list.csv": dict(
        column="ObjectId", rows=52, valid=45, duplicates=4, invalid=3, batches=1, identities=0
    ),
}


def offline_job(rig: Rig, ledger: Path | None) -> Job:
    """A dry run's job as the CLI builds it without credentials: no token source."""
    return Job(
        rig.settings,
        run_scope(rig.settings, None, choose(["confirm"])),
        None,
        ledger,
        rig.events,
    )


@pytest.mark.parametrize("named", [False, True], ids=["no-ledger-yet", "ledger-named"])
@pytest.mark.parametrize("name", sorted(SAMPLE_COUNTS))
def test_sample_dry_run_counts_are_exact_offline_and_create_nothing(
    tmp_path: Path, name: str, named: bool
) -> None:
    want = SAMPLE_COUNTS[name]
    rig = Rig(tmp_path)
    ledger = rig.ledger_for() if named else None
    got = run(offline_job(rig, ledger), RunOptions((SAMPLES / name,), dry_run=True)).to_json()
    for key in ("rows", "valid", "duplicates", "invalid"):
        assert got[key] == want[key], key
    assert got["actions"]["confirm"]["requests"] == want["batches"]
    assert got["rows"] == got["valid"] + got["duplicates"] + got["invalid"]
    oracle = expected_ids(SAMPLES / name, str(want["column"]))
    assert got["valid"] == len(oracle) + want["identities"]
    assert got["to_send"] == len(oracle)  # identities join the plan once looked up
    assert got["lookup_requests"] == (1 if want["identities"] else 0)  # an estimate
    assert got["dry_run"] and got["done"] == 0 and got["requests"] == 0
    assert got["ledger_exists"] is False and got["rejects"] is None
    assert rig.record.requests == 0
    assert not (tmp_path / "ledgers").exists()  # no ledger, no rejects file: nothing at all


def test_run_sends_every_valid_id_once_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    want = entra_users()
    first = rig.run(ENTRA)
    assert sorted(rig.record.accepted[CONFIRM]) == sorted(want)  # each exactly once
    assert first.actions[0].done == len(want) == 131
    assert first.failed == 0 and first.unknown == 0 and first.not_sent == 0
    # Identity Protection requests: who was already confirmed (a page), then 131 IDs in 60s
    assert first.requests == 1 + 3
    assert first.inputs.resolved == 1 and first.inputs.users == 131
    assert set(states(rig.ledger_for()).values()) == {"done"}
    filters = list(rig.record.filters)

    second = rig.run(ENTRA)
    assert second.actions[0].already_done == 131 and second.to_send == 0
    assert len(rig.record.accepted[CONFIRM]) == 131
    assert rig.record.filters == filters  # the UPN was not looked up again


def test_rows_added_to_the_input_are_the_only_ones_sent_on_rerun(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    old = expected_ids(ANALYST, "ObjectId")
    path = write_ids(tmp_path / "ids.csv", old[:30])
    rig.run(path)
    write_ids(path, old)
    sent = rig.record.requests
    planned = rig.run(path, dry_run=True)  # reads the ledger, sends nothing
    assert (planned.actions[0].already_done, planned.to_send, planned.ledger_exists) == (
        30,
        15,
        True,
    )
    assert rig.record.requests == sent
    again = rig.run(path)
    assert again.actions[0].already_done == 30
    assert again.actions[0].done == 15
    assert rig.record.accepted[CONFIRM] == old  # the first 30, then only the 15 added


def test_transient_faults_end_with_every_id_done(tmp_path: Path) -> None:
    faults = {"500": 0.1, "503": 0.05, "reset": 0.05, "lost": 0.05, "429": 0.05}
    sim = sim_settings(faults=faults, retry_after_seconds=0.01, seed=7)
    rig = Rig(tmp_path, sim=sim, send={"batch_size": 20})
    summary = rig.run(ENTRA)
    want = set(entra_users())
    assert set(rig.record.accepted[CONFIRM]) == want
    assert summary.actions[0].done == len(want)
    assert set(states(rig.ledger_for()).values()) == {"done"}
    assert sum(rig.record.faults.values()) > 0  # the faults really happened


def test_a_30_percent_fault_mix_over_3000_ids_ends_all_done(tmp_path: Path) -> None:
    values = ids(3000)
    faults = {"429": 0.06, "500": 0.06, "502": 0.03, "503": 0.06, "504": 0.03}
    faults |= {"reset": 0.03, "lost": 0.03}
    rig = Rig(tmp_path, sim=sim_settings(faults=faults, retry_after_seconds=0.01, seed=30))
    summary = rig.run(write_ids(tmp_path / "ids.csv", values))
    assert summary.actions[0].done == 3000
    assert counts(rig.ledger_for()) == {"confirm": {"done": 3000}}
    record = rig.record
    assert set(record.accepted[CONFIRM]) == set(values)
    injected = sum(record.faults.values()) + record.statuses[429]
    assert injected / record.requests > 0.2  # the mix really hit about 30% of requests


def test_bad_ids_are_isolated_with_their_400_the_rest_done_and_status_counts_both(
    tmp_path: Path,
) -> None:
    want = expected_ids(ANALYST, "ObjectId")
    bad = [want[5], want[40]]
    rig = Rig(tmp_path, sim=sim_settings(bad_ids=bad))
    summary = rig.run(ANALYST)
    assert (summary.actions[0].done, summary.actions[0].failed) == (43, 2)
    assert set(rig.record.accepted[CONFIRM]) == set(want) - set(bad)
    failed = report_frame(rig.ledger_for()).filter(state="failed")
    assert sorted(failed.select("user_id", "last_http_status", "error_code").rows()) == sorted(
        (b, 400, "invalidRequest") for b in bad
    )
    got = status(rig.ledger_for()).counts["confirm"]
    assert (got["done"], got["failed"], got["planned"], got["unknown"]) == (43, 2, 0, 0)


def test_a_refused_token_stops_the_run_resumably(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    refused = rig.run(ANALYST, token="not-the-right-token")
    assert refused.stopped and "Graph refused the token" in refused.stopped
    assert not refused.unreachable
    assert 1 <= rig.record.statuses[401] <= 4
    assert refused.actions[0].done == 0 and refused.not_sent == 45
    assert set(states(rig.ledger_for()).values()) == {"planned"}
    resumed = rig.run(ANALYST)
    assert resumed.actions[0].done == 45 and resumed.stopped is None


def test_a_403_stops_at_once_naming_the_permission_and_a_resume_finishes(tmp_path: Path) -> None:
    rig = Rig(tmp_path, sim=sim_settings(permission_denied=True))
    denied = rig.run(ENTRA)
    assert denied.stopped is not None
    assert "IdentityRiskyUser.ReadWrite.All" in denied.stopped
    assert "Security Administrator" in denied.stopped
    assert 1 <= rig.record.statuses[403] <= 4  # within a few requests
    assert set(states(rig.ledger_for()).values()) == {"planned"}  # not failed: resumable
    rig.sim = GraphSimulator(FAST, tokens={TEST_TOKEN})  # the permission granted
    resumed = rig.run(ENTRA)
    assert resumed.actions[0].done == 131
    assert sorted(rig.record.accepted[CONFIRM]) == sorted(entra_users())


def test_status_counts_by_action_and_state_and_names_the_last_run(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(ANALYST)
    got = status(rig.ledger_for())
    assert got.counts["confirm"]["done"] == 45 and got.counts["confirm"]["failed"] == 0
    assert got.users == 45 and got.meta["actions"] == "confirm"
    assert not got.live and not got.killed
    assert got.last_run is not None and got.last_run["command"] == "run"
    assert got.resume == f"cd {shlex.quote(os.getcwd())} && batcher run (test)"  # from there


def test_a_ledger_for_another_tenant_or_other_actions_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(ANALYST)
    before = rig.record.requests
    other = Rig(tmp_path, auth={"tenant_id": "11111111-2222-4333-8444-555555555555"})
    with pytest.raises(LedgerError, match="this ledger is for tenant"):
        other.run(ANALYST, ledger=rig.ledger_for())
    with pytest.raises(LedgerError, match="confirm"):
        rig.run(ANALYST, actions=("disable",), ledger=rig.ledger_for())
    assert rig.record.requests == before
    assert other.record.requests == 0
    assert counts(rig.ledger_for()) == {"confirm": {"done": 45}}


def _jwt(tenant: str) -> str:
    import base64
    import json

    def part(data: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'tid': tenant})}.x"


def test_a_token_for_another_tenant_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    rig = Rig(tmp_path, auth={"tenant_id": "11111111-2222-4333-8444-555555555555"})
    with pytest.raises(AuthError, match="signed in to tenant 99999999-8888-4777-8666-555555555555"):
        rig.run(ANALYST, token=_jwt("99999999-8888-4777-8666-555555555555"))
    assert rig.record.requests == 0
    assert counts(rig.ledger_for()) == {"confirm": {}}  # no step planned
    assert runs_of(rig.ledger_for()) == []  # and no run recorded


@pytest.mark.parametrize("method", ["azure_cli", "managed_identity"])
def test_methods_that_cannot_name_the_tenant_offline_need_tenant_id(
    tmp_path: Path, method: str
) -> None:
    chosen = settings(tmp_path, auth={"method": method})
    with pytest.raises(ConfigError, match=f"method = '{method}' needs tenant_id"):
        run_scope(chosen, tokens_for(chosen, offline=True), choose(["confirm"]))


def test_a_missing_token_is_a_config_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCHER_ACCESS_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="BATCHER_ACCESS_TOKEN"):
        tokens_for(settings(tmp_path))
    assert tokens_for(settings(tmp_path), offline=True) is None  # a dry run needs none


def test_a_directory_given_as_ledger_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(LedgerError, match="is a directory; --ledger takes a file path"):
        rig.run(ANALYST, ledger=folder)
    assert rig.record.requests == 0


def test_simulator_settings_reach_the_built_in_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCHER_ACCESS_TOKEN", raising=False)  # the simulator needs no account
    values = ids(10)
    bad = values[7]
    simulated = settings(
        tmp_path,
        graph={"target": "simulator", "base_url": ""},
        simulator={"rate_per_second": 100.0, "burst": 2, "latency_min_seconds": 0.0}
        | {"latency_max_seconds": 0.01, "bad_ids": [bad]},
    )
    tokens = tokens_for(simulated)
    events = Hooked()
    who = run_scope(simulated, tokens, choose(["confirm"]))
    job = Job(simulated, who, tokens, tmp_path / "l.sqlite", events)
    job = replace(job, start_simulator=built_in_simulator)  # as the CLI does
    assert job.simulated
    summary = run(job, RunOptions((write_ids(tmp_path / "ids.csv", values),)))
    assert summary.target == "simulator" and summary.tenant == "simulator"
    assert (summary.actions[0].done, summary.actions[0].failed) == (9, 1)
    assert states(job.ledger)[bad] == "failed"
    assert events.named("simulator")[0]["url"].startswith("http://127.0.0.1:")


def test_mostly_invalid_inputs_are_a_prominent_note_naming_the_rejects_file(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    values = [*ids(3), "n/a", "TBD", "12345", "not an id", "-"]
    summary = rig.run(write_ids(tmp_path / "ids.csv", values))
    assert summary.inputs.invalid == 5 and summary.actions[0].done == 3
    assert summary.rejects is not None and Path(summary.rejects).is_file()
    note = [n for n in summary.notes if "not valid" in n]
    assert note and "5 of 8 rows (62%)" in note[0]
    assert note[0].endswith(f"see {summary.rejects}")


def test_a_few_invalid_rows_are_no_note(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    summary = rig.run(write_ids(tmp_path / "ids.csv", [*ids(40), "n/a"]))
    assert summary.inputs.invalid == 1 and summary.rejects is not None
    assert not any("not valid" in n for n in summary.notes)  # 2%: only counted


def test_an_unreachable_graph_is_said_at_once_and_stops_the_run_with_all_planned(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, send={"unreachable_after_seconds": 0.1})
    job = rig.job(ledger=rig.ledger_for())
    nowhere = Route("http://127.0.0.1:1", httpx.AsyncHTTPTransport())  # nothing listens there
    summary = run(job, RunOptions((write_ids(tmp_path / "ids.csv", ids(40)),)), nowhere)
    seen = [name for name, _ in rig.events.seen]
    assert seen.index("unreachable") < seen.index("request")  # said on the first failure
    said = rig.events.named("unreachable")
    assert len(said) == 1
    assert said[0]["host"] == "127.0.0.1" and said[0]["cause"] == "the connection was refused"
    assert summary.stopped is not None and summary.unreachable
    assert "cannot reach 127.0.0.1" in summary.stopped
    assert summary.actions[0].done == 0 and summary.unknown == 0 and summary.not_sent == 40
    assert counts(rig.ledger_for()) == {"confirm": {"planned": 40}}  # none may have applied


def test_a_stop_leaves_unknown_only_what_may_have_been_applied(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        sim=sim_settings(rate_per_second=20.0),
        send={"rate_per_second": 20.0, "batch_size": 10, "max_in_flight": 2},
    )
    rig.events = Hooked()
    stop = StopSignal()
    # after the read of who was already confirmed and four answers, as a Ctrl-C would
    rig.events.at("request", 1 + 4, stop.ask)
    summary = rig.run(write_ids(tmp_path / "ids.csv", ids(600)), stop=stop)
    action = summary.actions[0]
    assert summary.interrupted and summary.stopped is None
    assert 40 <= action.done <= 60
    assert action.unknown <= 2 * 10  # at most the requests in flight
    assert action.not_sent == 600 - action.done - action.unknown
    report = report_frame(rig.ledger_for())
    planned = report.filter(state="planned")
    assert planned.height == action.not_sent and set(planned["attempts"]) == {0}
    assert report.filter(state="done").height == action.done
    assert set(rig.record.accepted[CONFIRM]) == set(report.filter(state="done")["user_id"])

    offered = rig.undo(rig.ledger_for(), dry_run=True)
    assert offered.actions[0].name == "dismiss"
    assert offered.to_send == action.done + action.unknown  # never what was not sent
    assert rig.record.accepted["dismiss"] == []


def test_only_429s_past_the_retry_window_leave_steps_planned_and_undo_offers_none(
    tmp_path: Path,
) -> None:
    sim = sim_settings(faults={"429": 1.0}, retry_after_seconds=0.01)
    rig = Rig(tmp_path, sim=sim, send={"retry_for_seconds": 0.05, "batch_size": 10})
    summary = rig.run(write_ids(tmp_path / "ids.csv", ids(30)))
    assert rig.record.statuses[429] >= 3 and rig.record.accepted[CONFIRM] == []
    assert summary.unknown == 0 and summary.actions[0].done == 0
    assert summary.not_sent == 30
    assert counts(rig.ledger_for()) == {"confirm": {"planned": 30}}
    assert rig.undo(rig.ledger_for(), dry_run=True).to_send == 0


def test_the_ledger_records_who_ran_what_from_which_inputs(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(ANALYST)
    with sqlite3.connect(rig.ledger_for()) as db:
        row = db.execute(
            "SELECT command, os_user, host, inputs, config_digest, command_line FROM runs"
        ).fetchone()
    assert row[0] == "run" and row[1] and row[2] and row[5] == "batcher run (test)"
    assert str(ANALYST) in row[3] and len(row[4]) == 64


class CountsClosing(StaticToken):
    """A token source that counts how often it was closed (a credential's HTTP session)."""

    def __init__(self) -> None:
        super().__init__(TEST_TOKEN)
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_run_leaves_the_token_source_open_for_whoever_created_it_to_close(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    tokens = CountsClosing()
    job = replace(rig.job(ledger=rig.ledger_for()), tokens=tokens)
    summary = run(job, RunOptions((write_ids(tmp_path / "ids.csv", ids(5)),)), rig.route)
    assert summary.actions[0].done == 5
    assert tokens.closed == 0  # the CLI, which signed in, closes it once the command ends


def test_a_job_cannot_be_changed_once_built(tmp_path: Path) -> None:
    job = Rig(tmp_path).job()
    with pytest.raises(FrozenInstanceError):
        job.command_line = "batcher something else"  # type: ignore[misc]
