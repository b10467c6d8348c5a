"""--remediate through the real CLI: each user's clean-up in order, whatever Graph answers."""

from __future__ import annotations

import uuid
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from batcher.simulator.mailrules import has_mailbox
from tests.helpers import FAST, run_cli, write_config, write_ids

pytestmark = pytest.mark.e2e  # the real command in a subprocess

IDS = [str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(20)]
# every budget answers some requests 429 or 503, inside JSON batches and alone. A directory or
# reports 429 says Retry-After as Graph does, but here at least 0.05 s rather than Graph's whole
# second (retry_after_least_seconds; retry_after_seconds 0.0 makes the 503s' Retry-After 0): the
# run holds that budget for it, and the test is about order, not waiting (~1 s a fault before)
FAULTY = FAST.model_copy(
    update={
        "reports_per_second": 500.0,
        "reports_burst": 100,
        "faults": {"429": 0.1, "503": 0.1},
        "directory_faults": {"429": 0.03, "503": 0.05},
        "retry_after_seconds": 0.0,
        "retry_after_least_seconds": 0.05,
    }
)
# short windows: a 429 spends the window (the pacer waits for it to refill), 10 min for Outlook
# (the same rates in 0.2 s windows: the test is about order, not waiting)
TENANT = {"tenant_writes_per_window": 200, "tenant_writes_window_seconds": 0.2}
BUDGETS = {
    "reports_per_window": 20,
    "reports_window_seconds": 0.2,
    "outlook_per_window": 20,
    "outlook_window_seconds": 0.2,
}


def test_remediate_keeps_each_users_order_under_429s_and_5xx_on_every_budget(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(FAULTY)
    config = write_config(tmp_path / "config.toml", sim.url, budgets=BUDGETS, directory=TENANT)
    people = write_ids(tmp_path / "people.csv", IDS)
    result = run_cli(
        "run", "--yes", people, "-c", config, "--remediate", "--ledger", tmp_path / "l.sqlite",
        "--passwords-out", tmp_path / "passwords.csv", cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    graph = sim.simulator
    assert graph.record.statuses[429] and graph.record.statuses[503]  # the faults did happen
    order = ("disable", "reset", "revoke", "remove-auth-methods", "disable-mail-rules")
    times: dict[str, dict[str, list[float]]] = {u: {op: [] for op in order} for u in IDS}
    for write in graph.record.writes:
        if 200 <= write.status < 300 and write.user_id in times:
            times[write.user_id][write.op].append(write.at)
    for (uid, _), at in zip(graph.auth_methods.deleted, graph.auth_methods.deleted_at, strict=True):
        times[uid]["remove-auth-methods"].append(at)
    for (uid, _, _), at in zip(graph.mail_rules.changed, graph.mail_rules.changed_at, strict=True):
        times[uid]["disable-mail-rules"].append(at)
    for uid, ops in times.items():
        assert ops["disable"] and ops["revoke"] and ops["remove-auth-methods"], uid
        assert bool(ops["disable-mail-rules"]) == has_mailbox(uid)
        steps = [ops[op] for op in order if ops[op]]  # a synced user has no reset
        for earlier, later in pairwise(steps):
            assert max(earlier) < min(later), (uid, ops)
    assert set(graph.record.accepted["confirmCompromised"]) == set(IDS)  # beside, on its own
