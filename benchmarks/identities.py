"""Identity look-ups: the directory requests it takes to resolve UPNs, and what UPNs cost a run.

1. BENCH_UPNS (default 30,000) distinct UPNs, `batcher resolve` against an open simulated
   directory (it resolves any well-formed address) at the default directory budgets: the
   directory HTTP requests (the simulator's ``$batch`` calls) against the goal
   ceil(n / 300) x 1.05 (a batch holds 20 look-ups of 15 values), the requests inside them, the
   429s, and the time.
2. BENCH_RUN_USERS (default 6,000) users confirmed compromised from their UPNs, and the same
   run from their object IDs, at the Identity Protection limit (simulator 1 request/s, burst 1;
   ``[send] rate_per_second = 1``; directory reads at their defaults; latency 0.05-0.3 s, the
   simulator's default): wall time of each process, start to exit, and their ratio (goal: UPNs
   <= 1.05 x object IDs). The look-up time is the span of the run's directory requests in its
   --log-file, from the first one's start to the last one's answer.

BENCH_IDENTITIES_PARTS=resolve,run chooses the parts (default both).
"""

from __future__ import annotations

import math
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from batcher.config import SimulatorSettings
from batcher.simulator import GraphSimulator, RunningSimulator
from batcher.simulator.directory import derived_id
from benchmarks.harness import TOKEN, events, run, size, write_column, write_config

# Identity Protection's latency: the simulator's default. (The pacing benchmark's 0.05-1.5 s
# would add up to 1.45 s of noise to the last answer of either run: 1.5% of a 100 s run.)
LATENCY = (0.05, 0.3)
LOOKUPS_PER_REQUEST = 300  # 20 requests in a JSON batch x 15 values in a $filter


def _upns(n: int, domain: str) -> list[str]:
    return [f"analyst.{i:06d}@{domain}" for i in range(n)]


def resolve_upns(n: int) -> dict[str, Any]:
    """`batcher resolve` on ``n`` distinct UPNs against an open directory."""
    sim = GraphSimulator(SimulatorSettings(seed=1), tokens={TOKEN})
    with tempfile.TemporaryDirectory() as tmp, RunningSimulator(sim) as server:
        work = Path(tmp)
        write_column(work / "upns.csv", "userPrincipalName", _upns(n, "fabrikam.com"))
        config = write_config(work, server.url)
        args = ["resolve", "upns.csv", "--out", "resolved.csv", "--config", str(config)]
        done = run(work, [*args, "--json"]).check("resolve")
    record = sim.record
    answered = [t for t, _ in record.answers]
    return {
        "upns": n,
        "goal": math.ceil(n / LOOKUPS_PER_REQUEST) * 1.05,
        "batches": record.batches,
        "http": record.requests,
        "inner": record.inner_requests,
        "throttled": record.statuses[429] + record.inner_statuses[429],
        "resolved": done.summary["resolved"],
        "reported": done.summary["requests"],
        "wall": done.wall,
        "span": max(answered) - min(answered) if answered else 0.0,
    }


def _lookup_span(log: Path) -> float:
    """Seconds from the first directory read's start to the last one's answer (the log)."""
    spans = []
    for event in events(log):
        if event.get("event") == "request" and event.get("budget") == "directory_reads":
            end = datetime.fromisoformat(event["time"]).timestamp()
            spans.append((end - event["latency_ms"] / 1000, end))
    return max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0.0


def confirm_run(values: list[str], header: str) -> dict[str, Any]:
    """`batcher run` (confirm) from ``values`` at 1 request/s; the process's wall time."""
    settings = SimulatorSettings(
        rate_per_second=1,
        burst=1,
        latency_min_seconds=LATENCY[0],
        latency_max_seconds=LATENCY[1],
        seed=1,
    )
    sim = GraphSimulator(settings, tokens={TOKEN})
    with tempfile.TemporaryDirectory() as tmp, RunningSimulator(sim) as server:
        work = Path(tmp)
        write_column(work / "users.csv", header, values)
        config = write_config(work, server.url, send={"rate_per_second": 1})
        args = ["run", "users.csv", "--config", str(config), "--ledger", "ledger.sqlite"]
        done = run(work, [*args, "--yes", "--json", "--log-file", "events.jsonl"]).check("run")
        lookup = _lookup_span(work / "events.jsonl")
    record = sim.record
    first = min(record.applied_at.values()) if record.applied_at else 0.0
    return {
        "wall": done.wall,
        "send": done.summary["seconds"],
        "lookup": lookup,
        "lookup_requests": done.summary["lookup_requests"],
        "confirmed": len(set(record.accepted["confirmCompromised"])),
        "ip_requests": record.requests - record.batches,
        "throttled": record.statuses[429],
        "first_confirm": first,
    }


def main() -> None:
    parts = os.environ.get("BENCH_IDENTITIES_PARTS", "resolve,run").split(",")
    if "resolve" in parts:
        _resolve_table(size("BENCH_UPNS", 30_000))
    if "run" in parts:
        _run_table(size("BENCH_RUN_USERS", 6_000))


def _resolve_table(n_upns: int) -> None:
    r = resolve_upns(n_upns)
    met = "met" if r["batches"] <= r["goal"] else "NOT met"
    print(
        f"1. `batcher resolve`, {r['upns']:,} distinct UPNs, open directory, reads paced at "
        f"100/s (simulator allows 300/s)\n\n"
        "| UPNs | directory HTTP requests ($batch) | goal | inner requests | 429s | resolved | "
        "wall s | first to last answer s |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {r['upns']:,} | {r['batches']} (all HTTP: {r['http']}; batcher counted "
        f"{r['reported']}) | <= {r['goal']:g}: {met} | {r['inner']:,} | {r['throttled']} | "
        f"{r['resolved']:,} | {r['wall']:.1f} | {r['span']:.1f} |\n"
    )


def _run_table(n_run: int) -> None:
    upns = _upns(n_run, "contoso.com")
    ids = [derived_id(u) for u in upns]  # the open directory's object IDs for those UPNs
    by_upn = confirm_run(upns, "userPrincipalName")
    by_id = confirm_run(ids, "id")
    ratio = by_upn["wall"] / by_id["wall"]
    met = "met" if ratio <= 1.05 else "NOT met"
    print(
        f"2. `batcher run` (confirm), {n_run:,} users, Identity Protection 1 request/s "
        f"(burst 1, latency {LATENCY[0]}-{LATENCY[1]} s), directory reads at their defaults\n\n"
        "| input | wall s | send s | look-up s | look-up requests | IP requests | IP 429s | "
        "users confirmed |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for name, x in (("object IDs", by_id), ("UPNs", by_upn)):
        print(
            f"| {name} | {x['wall']:.1f} | {x['send']:.1f} | {x['lookup']:.1f} | "
            f"{x['lookup_requests']} | {x['ip_requests']} | {x['throttled']} | "
            f"{x['confirmed']:,} |"
        )
    print(
        f"\nUPN run / object-ID run wall time: {ratio:.4f} (goal <= 1.05: {met}); "
        f"the look-up took {by_upn['lookup']:.1f} s of the UPN run's {by_upn['wall']:.1f} s."
    )
