"""Planning: what still needs sending given the ledger's states."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from batcher.inputs import read_inputs
from batcher.plan import make_plan


def _ids(n: int) -> list[str]:
    return [f"{i:08x}-0000-4000-8000-000000000000" for i in range(1, n + 1)]


def test_plan_skips_confirmed_and_failed_and_resends_unsure(tmp_path: Path) -> None:
    ids = _ids(6)
    path = tmp_path / "ids.csv"
    path.write_text("id\n" + "\n".join(ids) + "\n", encoding="utf-8")
    inputs = read_inputs([path])
    known = pl.DataFrame(
        {
            "user_id": ids[:5],
            "state": ["confirmed", "failed", "sending", "unknown", "planned"],
        }
    )
    plan = make_plan(inputs, known, batch_size=2)
    assert plan.to_send.to_list() == [ids[2], ids[3], ids[4], ids[5]]
    assert plan.already_done == 1
    assert plan.failed_before == 1
    assert plan.new_ids.get_column("user_id").to_list() == [ids[5]]
    assert plan.batches == 2
    assert list(plan.iter_batches()) == [[ids[2], ids[3]], [ids[4], ids[5]]]
    assert plan.seconds_at(0.5) == 4.0


def test_batches_never_exceed_the_batch_size(tmp_path: Path) -> None:
    ids = _ids(125)
    path = tmp_path / "ids.csv"
    path.write_text("id\n" + "\n".join(ids) + "\n", encoding="utf-8")
    empty = pl.DataFrame(schema={"user_id": pl.String, "state": pl.String})
    plan = make_plan(read_inputs([path]), empty, batch_size=60)
    sizes = [len(b) for b in plan.iter_batches()]
    assert sizes == [60, 60, 5]
    assert [i for b in plan.iter_batches() for i in b] == ids
