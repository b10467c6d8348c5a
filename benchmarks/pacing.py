"""Sending at the tenant's limit: batcher alone, with another app in the tenant, and the SDK.

Against a simulator enforcing R requests/s with burst 1 and 0.05-1.5 s latency, one run, the
same batches for each:

1. batcher alone: efficiency = ideal time (batches / R) / time taken; share of 429s.
2. batcher while another app takes a quarter of the budget: efficiency against what remains
   (batches / (0.75 R)).
3. the official msgraph-sdk (default retry handler) sending the batches one at a time.

Set BENCH_RATE (default 1, the real limit) and BENCH_BATCHES (default 100).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from batcher.config import SimulatorSettings
from batcher.simulator import GraphSimulator, RunningSimulator
from benchmarks.harness import TOKEN, run, write_column, write_config

LATENCY = (0.05, 1.5)


def _simulator(rate: float, other_share: float = 0.0, seed: int = 1) -> GraphSimulator:
    settings = SimulatorSettings(
        rate_per_second=rate,
        burst=1,
        latency_min_seconds=LATENCY[0],
        latency_max_seconds=LATENCY[1],
        other_apps_share=other_share,
        seed=seed,
    )
    return GraphSimulator(settings, tokens={TOKEN})


def run_batcher(rate: float, batches: list[list[str]], other_share: float) -> dict[str, float]:
    sim = _simulator(rate, other_share)
    with tempfile.TemporaryDirectory() as tmp, RunningSimulator(sim) as server:
        work = Path(tmp)
        ids = [uid for batch in batches for uid in batch]
        write_column(work / "ids.csv", "id", ids)
        config = write_config(work, server.url, send={"rate_per_second": rate, "max_in_flight": 8})
        args = ["run", "--yes", "ids.csv", "--json", "--config", str(config)]
        summary = run(work, [*args, "--ledger", "ledger.sqlite"]).check("pacing").summary
        record = sim.record
        return {
            "seconds": summary["seconds"],
            "confirmed": summary["actions"]["confirm"]["done"],
            "requests": record.requests,
            "throttled": record.statuses[429],
            "other_app_served": sim.bucket.other_served,
        }


def run_sdk(rate: float, batches: list[list[str]]) -> dict[str, float]:
    from benchmarks.msgraph_sdk import send_with_msgraph_sdk

    sim = _simulator(rate)
    with RunningSimulator(sim) as server:
        result = send_with_msgraph_sdk(server.url, TOKEN, batches)
    result["requests"] = sim.record.requests
    result["throttled"] = sim.record.statuses[429]
    result["confirmed"] = len(set(sim.record.accepted["confirmCompromised"]))
    return result


def main() -> None:
    rate = float(os.environ.get("BENCH_RATE", "1"))
    n = int(os.environ.get("BENCH_BATCHES", "100"))
    batches = [[str(uuid.uuid4()) for _ in range(60)] for _ in range(n)]
    ideal = n / rate
    alone = run_batcher(rate, batches, 0.0)
    shared = run_batcher(rate, batches, 0.25)
    sdk = run_sdk(rate, batches)
    ideal_shared = n / (0.75 * rate)
    rows = [
        ("batcher, alone", ideal, alone),
        ("batcher, another app takes 1/4", ideal_shared, shared),
        ("msgraph-sdk 1.65, one at a time", ideal, sdk),
    ]
    print(
        f"R = {rate:g} request/s, burst 1, latency {LATENCY[0]}-{LATENCY[1]} s, "
        f"{n} batches of 60\n\n"
        "| sender | ideal s | took s | efficiency | requests | 429s | IDs confirmed |\n"
        "|---|---|---|---|---|---|---|"
    )
    for name, best, result in rows:
        print(
            f"| {name} | {best:.1f} | {result['seconds']:.1f} | "
            f"{best / result['seconds']:.3f} | {result['requests']:.0f} | "
            f"{result['throttled']:.0f} ({100 * result['throttled'] / result['requests']:.1f}%) | "
            f"{result['confirmed']:.0f} |"
        )
    print(
        f"\nmsgraph-sdk took {sdk['seconds'] / alone['seconds']:.1f}x as long as batcher alone "
        f"({sdk['failed_batches']:.0f} batches lost). With another app: it got "
        f"{shared['other_app_served']:.0f} requests through while batcher ran."
    )
