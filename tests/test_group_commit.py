"""Group commits (workers/commits.py): writes of tasks ready at once commit together."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from batcher.actions import ACTIONS
from batcher.ledger import IllegalTransition
from batcher.workers.commits import GroupCommit
from tests.helpers import step_ledger

ACTION = next(iter(ACTIONS))


def _committed(path: Path) -> dict[str, str]:
    """Each step's state as another connection reads it (only what was committed)."""
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT user_id, state FROM steps").fetchall())


def test_writes_of_tasks_ready_at_once_commit_once_and_a_refused_one_fails_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = step_ledger(path, {ACTION: ["u1", "u2", "u3"]})
    commit = GroupCommit(ledger)
    results: dict[str, object] = {}

    async def start(uid: str) -> None:
        try:
            results[uid] = await commit(lambda: ledger.start_batch(ACTION, [(uid, ACTION)], uid))
        except Exception as exc:
            results[uid] = exc

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            for uid in ("u1", "u2", "nobody", "u3"):
                tasks.start_soon(start, uid)

    anyio.run(main)
    assert (commit.commits, commit.writes) == (1, 4)
    assert isinstance(results["nobody"], IllegalTransition)
    assert all(isinstance(results[u], tuple) for u in ("u1", "u2", "u3"))
    ledger.close()
    assert _committed(path) == {"u1": "sending", "u2": "sending", "u3": "sending"}


def test_a_write_awaited_alone_is_committed_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = step_ledger(path, {ACTION: ["u1"]})
    commit = GroupCommit(ledger)
    anyio.run(lambda: commit(lambda: ledger.start_batch(ACTION, [("u1", ACTION)], "c")))
    assert _committed(path) == {"u1": "sending"}
    with pytest.raises(IllegalTransition):  # no such step: refused, handed back
        anyio.run(lambda: commit(lambda: ledger.start_batch(ACTION, [("u9", ACTION)], "c")))
    assert commit.commits == 2
    ledger.close()
