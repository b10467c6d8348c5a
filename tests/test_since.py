"""--since: one parser (a duration back from now or an ISO time), shown as absolute UTC, recorded
in the ledger so a resume keeps the window, refused in one line when it cannot be right."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batcher.errors import ConfigError
from batcher.window import (
    SIGN_IN_LOGS_KEPT,
    Window,
    parse_since,
    recorded_window,
    settle_window,
)
from tests.helpers import FAST, ledger_in_process, run_cli, write_config, write_ids

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "start"),
    [
        ("7d", datetime(2026, 11, 24, 12, 0, tzinfo=UTC)),
        ("36h", datetime(2026, 11, 30, 0, 0, tzinfo=UTC)),
        ("90m", datetime(2026, 12, 1, 10, 30, tzinfo=UTC)),
        ("2026-11-29T08:00:00Z", datetime(2026, 11, 29, 8, 0, tzinfo=UTC)),
        ("2026-11-29T09:00:00+01:00", datetime(2026, 11, 29, 8, 0, tzinfo=UTC)),
        ("2026-11-29T08:00", datetime(2026, 11, 29, 8, 0, tzinfo=UTC)),  # no zone: UTC
        ("2026-11-29", datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),
    ],
)
def test_since_reads_a_duration_or_a_time_as_an_absolute_utc_start(
    given: str, start: datetime
) -> None:
    window = parse_since(given, NOW)
    assert window.start == start and window.start.tzinfo is not None
    assert window.shown() == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert window.line().startswith(f"incident window: since {window.shown()} (--since {given})")


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("2026-12-02T00:00:00Z", "is in the future"),
        ("soon", "is neither a duration nor an ISO 8601 time"),
        ("7 weeks", "is neither a duration nor an ISO 8601 time"),
    ],
)
def test_since_refuses_the_future_and_nonsense_in_one_line(given: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as refused:
        parse_since(given, NOW)
    assert "\n" not in str(refused.value)


def test_a_sign_in_window_beyond_the_30_days_the_logs_keep_is_refused() -> None:
    assert parse_since("30d", NOW, keep=SIGN_IN_LOGS_KEPT).start == NOW - timedelta(days=30)
    with pytest.raises(ConfigError, match="sign-in logs are kept 30 days"):
        parse_since("31d", NOW, keep=SIGN_IN_LOGS_KEPT)
    assert parse_since("31d", NOW).start == NOW - timedelta(days=31)  # no sign-ins read


def test_a_resume_keeps_the_recorded_window_and_refuses_a_different_one() -> None:
    first = parse_since("7d", NOW)
    meta: dict[str, str] = {}
    first.record(meta.__setitem__)
    recorded = recorded_window(meta)
    assert recorded is not None and recorded.start == first.start and recorded.recorded
    days_later = parse_since("7d", NOW + timedelta(days=3))  # the same command, days later
    assert settle_window(days_later, recorded) == recorded
    assert settle_window(None, recorded) == recorded
    assert settle_window(parse_since(first.shown(), NOW), recorded) == recorded
    with pytest.raises(ConfigError, match="differs from the window this ledger's first run"):
        settle_window(parse_since("2d", NOW), recorded)
    assert settle_window(first, None) == first
    assert settle_window(None, None) is None
    assert isinstance(first, Window)


@pytest.mark.e2e
def test_the_plan_shows_since_the_ledger_records_it_and_a_resume_cannot_change_it(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(FAST)
    config = write_config(tmp_path / "config.toml", sim.url)
    people = write_ids(tmp_path / "p.csv", ["ann@contoso.com", "ben@contoso.com"], "upn")
    ledger = tmp_path / "l.sqlite"
    common = (people, "-c", config, "--ledger", ledger, "--action", "disable")
    since = {"since": "2026-11-29T08:00"}
    planned = run_cli("run", "--dry-run", *common, "--since", "2026-11-29T08:00", cwd=tmp_path)
    assert planned.code == 0, planned.stderr
    assert "incident window: since 2026-11-29T08:00:00Z (--since 2026-11-29T08:00)" in (
        planned.stderr
    )
    # the run that records it: in-process (the real job parses --since and writes the ledger)
    ledger_in_process(sim.simulator, people, ("disable",), ledger, options=since)
    with sqlite3.connect(ledger) as db:
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'since%'").fetchall())
    assert meta == {"since": "2026-11-29T08:00:00Z", "since_given": "2026-11-29T08:00"}
    again = run_cli("run", "--yes", *common, cwd=tmp_path)  # no --since: the recorded one
    assert "incident window: since 2026-11-29T08:00:00Z" in again.stderr
    assert "a resume keeps it" in again.stderr
    other = run_cli("run", "--yes", *common, "--since", "1d", cwd=tmp_path)
    assert other.code == 2
    assert "differs from the window this ledger's first run recorded" in other.stderr
    future = run_cli("run", "--yes", *common, "--since", "2999-01-01", cwd=tmp_path)
    assert future.code == 2 and "is in the future" in future.stderr
    for refused in (other, future):  # one line, the last: nothing was recorded or sent
        said = [line for line in refused.stderr.splitlines() if line.startswith("batcher: ")]
        assert len(said) == 1 and refused.stderr.strip().endswith(said[0]), refused.stderr
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (2,)
