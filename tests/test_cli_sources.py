"""run's sources beside files, through the real CLI: a Defender XDR incident's evidence, risky
users by level, sign-ins from addresses; mixed with files, refused with the permission a source
needs, kept as a snapshot a resume acts on, read again with --refresh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batcher.job.sources import SourceOptions
from batcher.simulator.directory import derived_id
from batcher.simulator.risky import risky_upns
from batcher.simulator.security import sign_in_users
from tests.helpers import (
    FAST,
    cli_env,
    ledger_in_process,
    report_frame,
    run_cli,
    write_config,
    write_ids,
)

pytestmark = pytest.mark.e2e  # the real command in a subprocess

SOURCES = FAST.model_copy(
    update={
        "incidents": [42],
        "risky_users": {"high": 3, "medium": 2, "low": 1},
        "sign_ins": {"203.0.113.7": 2, "198.51.100.20": 1, "192.0.2.1": 1},
    }
)
INCIDENT_USERS = {  # incident 42's user and mailbox evidence: (input_value, source)
    derived_id("ann.42@contoso.com"): "incident 42 / alert da630042… / userEvidence",
    "ben.42@contoso.com": "incident 42 / alert da630042… / userEvidence",
    "S-1-5-21-1004336348-1177238915-682003330-5042": "incident 42 / alert da630042… / userEvidence",
    derived_id("dee.42@contoso.com"): "incident 42 / alert da630042… / mailboxEvidence",
}


def _start(factory: Any, **changes: Any) -> tuple[Any, Path]:
    server = factory(SOURCES.model_copy(update=changes))
    return server, server.url


def _run(tmp_path: Path, server: Any, *args: str, **env: str) -> Any:
    config = write_config(tmp_path / "config.toml", server.url)
    return run_cli(
        "run",
        *args,
        "--config",
        config,
        "--ledger",
        tmp_path / "l.sqlite",
        "--yes",
        cwd=tmp_path,
        env=cli_env(**env),
    )


def _by_input(ledger: Path) -> dict[str, str]:
    frame = report_frame(ledger).unique("user_id", keep="first")
    return dict(zip(frame["input_value"].to_list(), frame["source_file"].to_list(), strict=True))


def test_an_incident_alone_acts_on_its_user_and_mailbox_evidence_with_each_row_s_source(
    tmp_path: Path, simulator_factory: Any
) -> None:
    server = simulator_factory(SOURCES)
    done = _run(tmp_path, server, "--incident", "42", "--action", "disable")
    assert done.code == 0, done.stderr
    seen = _by_input(tmp_path / "l.sqlite")
    assert {k.upper() if k.startswith("s-") else k: v for k, v in seen.items()} == {
        k.upper() if k.startswith("s-") else k: v for k, v in INCIDENT_USERS.items()
    }
    out = done.stdout + done.stderr
    assert "4 userEvidence, 1 mailboxEvidence, 2 analyzedMessageEvidence (not used)" in out


def test_an_incident_with_recipients_and_a_file_are_one_set_without_duplicates(
    tmp_path: Path, simulator_factory: Any
) -> None:
    server = simulator_factory(SOURCES)
    ids = write_ids(tmp_path / "ids.csv", ["ann.42@contoso.com", "zed@contoso.com"], "upn")
    done = _run(
        tmp_path,
        server,
        str(ids),
        "--incident",
        "42",
        "--evidence",
        "user,recipient",
        "--action",
        "disable",
    )
    assert done.code == 0, done.stderr
    report = report_frame(tmp_path / "l.sqlite")
    by_file = dict(zip(report["input_value"], report["source_file"], strict=True))
    assert by_file["zed@contoso.com"].endswith("ids.csv")
    # ann is in the file and in the incident: one user, from the file (first seen)
    assert report.filter(pl.col("user_id") == derived_id("ann.42@contoso.com")).height == 1
    assert by_file["eve.42@contoso.com"].endswith("analyzedMessageEvidence")
    assert by_file["fay.42@contoso.com"].endswith("analyzedMessageEvidence")
    assert not any("mailboxEvidence" in s for s in by_file.values())  # not chosen
    assert "a recipient of phishing is not necessarily compromised" in done.stdout + done.stderr


def test_risky_users_past_500_are_listed_in_pages_on_identity_protection_s_budget(
    tmp_path: Path, simulator_factory: Any
) -> None:
    server = simulator_factory(SOURCES.model_copy(update={"risky_users": {"high": 730, "low": 5}}))
    done = _run(tmp_path, server, "--risky", "high", "--action", "confirm")
    assert done.code == 0, done.stderr
    report = report_frame(tmp_path / "l.sqlite")
    assert set(report["user_id"]) == {derived_id(u) for u in risky_upns("high", 730)}
    assert set(report["state"]) == {"done"}
    assert set(report["source_file"]) == {"risky users / high / atRisk"}
    assert "risky high: 730 users at risk (high), 2 pages on Identity Protection's budget" in (
        done.stdout + done.stderr
    )


def test_signed_in_from_an_address_and_a_range_finds_the_users_and_shows_count_and_range(
    tmp_path: Path, simulator_factory: Any
) -> None:
    server = simulator_factory(SOURCES)
    ids = write_ids(tmp_path / "ids.csv", ["zed@contoso.com"], "upn")
    done = _run(
        tmp_path,
        server,
        str(ids),
        "--signed-in-from",
        "203.0.113.0/24,192.0.2.1",
        "--since",
        "3d",
        "--action",
        "disable",
    )
    assert done.code == 0, done.stderr
    seen = _by_input(tmp_path / "l.sqlite")
    wanted = {
        derived_id(u) for u in sign_in_users("203.0.113.7", 2) + sign_in_users("192.0.2.1", 1)
    }
    assert set(seen) == wanted | {"zed@contoso.com"}
    assert all(seen[u].startswith("sign-in from ") for u in wanted)
    out = done.stdout + done.stderr
    assert "3 successful sign-ins since" in out and "by 3 users" in out
    assert " to " in out.split("successful sign-ins since", 1)[1].split("\n", 1)[0]


def test_a_cidr_range_the_logs_cannot_filter_is_refused_with_the_reason_before_any_request(
    tmp_path: Path, simulator_factory: Any
) -> None:
    server = simulator_factory(SOURCES)
    done = _run(tmp_path, server, "--signed-in-from", "10.0.0.0/10", "--since", "1d")
    assert done.code == 2
    assert "this range would need 64 filters (at most 16); give a /12 or narrower" in done.stderr
    assert [line for line in done.stderr.splitlines() if "error" in line] == [
        done.stderr.splitlines()[-1]
    ]
    assert not server.simulator.record.statuses  # no request at all


@pytest.mark.parametrize(
    ("denied", "args", "permission"),
    [
        ("incidents", ("--incident", "42"), "SecurityIncident.Read.All"),
        ("risky_users", ("--risky", "high"), "IdentityRiskyUser.Read.All"),
        ("sign_ins", ("--signed-in-from", "203.0.113.7", "--since", "1d"), "AuditLog.Read.All"),
    ],
)
def test_a_refused_source_names_its_permission_and_exits_3_before_any_write(
    tmp_path: Path, simulator_factory: Any, denied: str, args: tuple[str, ...], permission: str
) -> None:
    server = simulator_factory(SOURCES.model_copy(update={"sources_denied": [denied]}))
    done = _run(tmp_path, server, *args, "--contain")
    assert done.code == 3, done.stderr
    assert permission in done.stderr
    record = server.simulator.record
    assert not record.risk_state  # nothing confirmed
    assert set(record.statuses) == {403} and record.statuses[403] == 1  # no write, no look-up


def test_an_unknown_incident_is_exit_2_in_one_line(tmp_path: Path, simulator_factory: Any) -> None:
    server = simulator_factory(SOURCES)
    done = _run(tmp_path, server, "--incident", "999", "--contain")
    assert done.code == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("batcher: error")]
    assert lines == [lines[0]] and "--incident 999: Defender XDR has no such incident" in lines[0]


def test_a_resume_after_sigkill_acts_on_the_snapshot_even_if_the_incident_changed(
    tmp_path: Path, simulator_factory: Any
) -> None:
    server = simulator_factory(SOURCES)
    # killed at the second answer: the incident was read and kept; the look-up had begun
    killed = _run(
        tmp_path,
        server,
        "--incident",
        "42",
        "--action",
        "disable",
        BATCHER_FAILPOINT="send.after_answer:2",
    )
    assert killed.code != 0
    incident = server.simulator.security.incidents[42]
    incident["alerts"] = incident["alerts"][1:]  # the first alert is gone meanwhile
    resumed = _run(tmp_path, server, "--incident", "42", "--action", "disable")
    assert resumed.code == 0, resumed.stderr
    assert (
        set(_by_input(tmp_path / "l.sqlite"))
        == {k.upper() if k.startswith("s-") else k for k in INCIDENT_USERS} | set()
    )
    assert "from the ledger's snapshot of" in resumed.stdout + resumed.stderr


def test_refresh_reads_the_sources_again_and_says_what_changed(
    tmp_path: Path, simulator_factory: Any
) -> None:
    server = simulator_factory(SOURCES)
    # the first run, in-process (the real job reads the risky users and snapshots them in
    # the ledger); the --refresh under test runs at the real CLI
    risky_only = {"sources": SourceOptions(risky="high,medium")}
    ledger_in_process(server.simulator, (), ("disable",), tmp_path / "l.sqlite", options=risky_only)
    risky = server.simulator.risky_users.seeded
    gone = derived_id(risky_upns("high", 3)[0])
    del risky[gone]  # remediated meanwhile
    new = derived_id("late@contoso.com")
    risky[new] = "medium"
    again = _run(tmp_path, server, "--risky", "high,medium", "--action", "disable", "--refresh")
    assert again.code == 0, again.stderr
    out = again.stdout + again.stderr
    assert f"--refresh: risky high,medium read again: 1 added ({new}); 1 removed ({gone})" in out
    assert new in _by_input(tmp_path / "l.sqlite")
