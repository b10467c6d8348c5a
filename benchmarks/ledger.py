"""Ledger speed: time to first request on a big resume, and the ledger's cost per batch.

1. A ledger whose 1,000,000 confirm steps are already done, and an input of 1,010,000: the
   real CLI in a subprocess against the simulator; time from process start to the first ID
   accepted.
2. Per batch of 60 on that ledger: the intent (start_batch: the batch, its first attempt and
   its steps 'sending', one commit) and the outcome (finish_attempt) commits, with WAL and
   synchronous=FULL, as the sender does them.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import polars as pl

from batcher.config import SimulatorSettings
from batcher.ledger import Answer, Ledger, Outcome, RunScope, StepState
from batcher.simulator import GraphSimulator, RunningSimulator
from benchmarks.harness import TOKEN, start, write_column, write_config

IDENTITY = RunScope(("confirm",), "token-tenant", "global", "v1.0")


def _ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i * 2_654_435_761 + 17, version=4)) for i in range(n)]


def _users(ids: list[str], source: str) -> pl.DataFrame:
    return pl.DataFrame({"user_id": ids, "source_file": source, "source_row": range(len(ids))})


def _done_ledger(path: Path, ids: list[str]) -> None:
    ledger = Ledger.open(path, IDENTITY)
    ledger.add_users(_users(ids, "old.csv"))
    ledger.add_steps("confirm", pl.Series(ids))
    with ledger._write() as db:  # setup only: mark them all done at once
        db.execute("UPDATE steps SET state = ?, attempts = 1", (StepState.DONE.value,))
    ledger.close()


def time_to_first_request(work: Path, done: int, extra: int) -> dict[str, float]:
    ids = _ids(done + extra)
    ledger = work / "big.sqlite"
    _done_ledger(ledger, ids[:done])
    write_column(work / "ids.csv", "id", ids)
    settings = SimulatorSettings(
        rate_per_second=1000, burst=10, latency_min_seconds=0, latency_max_seconds=0
    )
    with RunningSimulator(GraphSimulator(settings, tokens={TOKEN})) as sim:
        config = write_config(work, sim.url, send={"rate_per_second": 50})
        args = ["run", "--yes", "ids.csv", "--config", str(config), "--ledger", str(ledger)]
        proc = start(work, args)
        assert sim.simulator.record.wait_for_accepted("confirmCompromised", 1, timeout=120)
        first = time.monotonic() - proc.started
        finished = proc.wait(timeout=600)
        total = finished.wall
        accepted = len(sim.simulator.record.accepted["confirmCompromised"])
    if finished.returncode != 0 or accepted != extra:
        raise SystemExit(
            f"benchmark run failed ({finished.returncode}, {accepted} sent): {finished.stderr}"
        )
    return {"first_request_s": first, "whole_run_s": total}


def cost_per_batch(work: Path, batches: int) -> dict[str, float]:
    ledger = Ledger.open(work / "big.sqlite", IDENTITY)
    ids = [str(uuid.uuid4()) for _ in range(batches * 60)]  # users new to the ledger
    ledger.add_users(_users(ids, "b"))
    ledger.add_steps("confirm", pl.Series(ids))
    accepted = Answer(Outcome.ACCEPTED, 204, request_id="r")
    intent, outcome = [], []
    for n in range(batches):
        keys = [(uid, "confirm") for uid in ids[n * 60 : (n + 1) * 60]]
        t0 = time.perf_counter()
        batch_id, attempt = ledger.start_batch("confirm", keys, str(uuid.uuid4()))
        t1 = time.perf_counter()
        ledger.finish_attempt(batch_id, attempt, accepted, StepState.DONE)
        t2 = time.perf_counter()
        intent.append(t1 - t0)
        outcome.append(t2 - t1)
    ledger.close()
    both = [a + b for a, b in zip(intent, outcome, strict=True)]
    return {
        "intent_ms": 1000 * statistics.mean(intent),
        "outcome_ms": 1000 * statistics.mean(outcome),
        "batch_ms": 1000 * statistics.mean(both),
        "batch_p99_ms": 1000 * statistics.quantiles(both, n=100)[98],
    }


def main() -> None:
    done = int(os.environ.get("BENCH_LEDGER_DONE", "1000000"))
    extra = int(os.environ.get("BENCH_LEDGER_EXTRA", "10000"))
    with tempfile.TemporaryDirectory() as tmp:
        first = time_to_first_request(Path(tmp), done, extra)
        cost = cost_per_batch(Path(tmp), 1000)
    print(
        "| confirm steps done in the ledger | input IDs | start to first request s | "
        "whole run s |\n"
        "|---|---|---|---|\n"
        f"| {done:,} | {done + extra:,} | {first['first_request_s']:.2f} | "
        f"{first['whole_run_s']:.1f} |\n\n"
        "| per batch of 60 (1,000 batches) | mean ms |\n|---|---|\n"
        f"| intent commit (batch, attempt, steps) | {cost['intent_ms']:.2f} |\n"
        f"| outcome commit | {cost['outcome_ms']:.2f} |\n"
        f"| both | {cost['batch_ms']:.2f} (p99 {cost['batch_p99_ms']:.2f}) |"
    )
