"""Containment (`--contain`: confirm, disable, revoke-sessions) of BENCH_CONTAIN_USERS users
(default 3,000) of a closed simulated directory of members, from their object IDs.

Identity Protection at 1 request/s (simulator burst 1, ``[send] rate_per_second = 1``),
directory writes at 20/s (simulator ``directory_writes_per_second = 20``, burst 20;
``[directory] writes_per_window = 20`` per 1 s), latency 0.05-0.3 s (the simulator's default),
``max_in_flight = 4``. Each run is the real CLI in a subprocess against a fresh simulator.

1. Wall time (process start to exit) of `--contain` against each step alone, and against
   disable + revoke-sessions together (they share the one write budget).
2. Write-budget efficiency = writes accepted / (writes_per_second x lane busy time), where
   lane busy time = (last write answered - first write answered) + burst / writes_per_second:
   a bucket of burst 20 refilling at 20/s accepts at most 20 x that many writes over the span.
   429s counted per budget.
3. BENCH_CONTAIN_KILLS (default 5) SIGKILLs during one containment, from outside, spread
   evenly over its 2 x users writes: the k-th once the simulator has accepted (k - 1/2) x
   2 x users / kills of them (600, 1,800, 3,000, 4,200, 5,400 at 3,000 users; waited for on
   the record's condition), so the first lands while the confirm lane still sends (it ends
   after about 50 s; 600 writes take about 30 s). Each kill is followed by the same command,
   the last one to the end. Checked from the simulator: users lost (not disabled, not revoked
   after their disable, or not confirmed), extra writes (accepted writes beyond one per user
   per action) against kills x max_in_flight x 20, extra confirmed IDs (accepted more than
   once) against kills x max_in_flight x 60, and per-user order violations (any revoke request
   reaching Graph before that user's first accepted disable).

BENCH_CONTAIN_PARTS=steps,kills chooses the parts (default both).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batcher.config import SimulatorSettings
from batcher.simulator import GraphSimulator, Record, RunningSimulator, Write
from benchmarks.harness import TOKEN, members, run, size, start, write_column, write_config

WRITES_PER_SECOND = 20
WRITES_BURST = 20
MAX_IN_FLIGHT = 4
CONTAIN = ("confirm", "disable", "revoke-sessions")
RUNS: dict[str, tuple[str, ...]] = {  # name -> its actions
    "confirm alone": ("confirm",),
    "disable alone": ("disable",),
    "revoke-sessions alone": ("revoke-sessions",),
    "disable + revoke-sessions": ("disable", "revoke-sessions"),
    "--contain": CONTAIN,
}
SINGLE = ("confirm alone", "disable alone", "revoke-sessions alone")


def _flags(actions: Sequence[str]) -> list[str]:
    if tuple(actions) == CONTAIN:
        return ["--contain"]
    return [flag for a in actions for flag in ("--action", a)]


def _simulator(n: int) -> GraphSimulator:
    settings = SimulatorSettings(
        rate_per_second=1,
        burst=1,
        directory_writes_per_second=WRITES_PER_SECOND,
        directory_writes_burst=WRITES_BURST,
        seed=1,
    )
    return GraphSimulator(settings, tokens={TOKEN}, users=members(n))


def _prepare(work: Path, sim: GraphSimulator, url: str) -> list[str]:
    """The input (object IDs) and the config; returns the command's arguments before actions."""
    write_column(work / "users.csv", "id", [u.id for u in sim.directory])
    config = write_config(
        work,
        url,
        send={"rate_per_second": 1, "max_in_flight": MAX_IN_FLIGHT},
        directory={  # the simulator's bucket: 20 at once, 20 a second
            "writes_per_window": WRITES_BURST,
            "writes_window_seconds": WRITES_BURST / WRITES_PER_SECOND,
        },
    )
    return ["run", "users.csv", "--config", str(config), "--ledger", "ledger.sqlite"]


def _writes(record: Record) -> dict[str, Any]:
    writes = record.writes
    ok = [w for w in writes if 200 <= w.status < 300]
    span = max(w.at for w in writes) - min(w.at for w in writes) if writes else 0.0
    busy = span + WRITES_BURST / WRITES_PER_SECOND if writes else 0.0
    return {
        "write_requests": len(writes),
        "writes_ok": len(ok),
        "write_429s": sum(w.status == 429 for w in writes),
        "busy": busy,
        "efficiency": len(ok) / (WRITES_PER_SECOND * busy) if busy else None,
    }


def _by_user(record: Record) -> dict[str, list[Write]]:
    mine: dict[str, list[Write]] = defaultdict(list)
    for w in record.writes:
        mine[w.user_id].append(w)
    return mine


def _first(writes: Sequence[Write], op: str) -> float | None:
    """When the first accepted write ``op`` was answered."""
    return min((w.at for w in writes if w.op == op and 200 <= w.status < 300), default=None)


def _not_done(sim: GraphSimulator, actions: Sequence[str]) -> int:
    """Users for whom an action of the run did not take effect (revoke: after the disable)."""
    confirmed = set(sim.record.accepted["confirmCompromised"])
    writes = _by_user(sim.record)
    bad = 0
    for user in sim.directory:
        mine = writes.get(user.id, [])
        disabled = _first(mine, "disable")
        revoked = [w.at for w in mine if w.op == "revoke" and 200 <= w.status < 300]
        if (
            ("confirm" in actions and user.id not in confirmed)
            or ("disable" in actions and (user.accountEnabled or disabled is None))
            or ("revoke-sessions" in actions and not revoked)
            or (
                "disable" in actions
                and "revoke-sessions" in actions
                and not any(disabled is not None and t > disabled for t in revoked)
            )
        ):
            bad += 1
    return bad


def _order_violations(sim: GraphSimulator) -> int:
    """Users with a revoke request (any answer) that reached Graph before their first accepted
    disable, or with no accepted disable at all."""
    bad = 0
    for mine in _by_user(sim.record).values():
        disabled = _first(mine, "disable")
        revokes = [w.at for w in mine if w.op == "revoke"]
        if revokes and (disabled is None or min(revokes) < disabled):
            bad += 1
    return bad


def one_run(n: int, name: str) -> dict[str, Any]:
    sim = _simulator(n)
    with tempfile.TemporaryDirectory() as tmp, RunningSimulator(sim) as server:
        work = Path(tmp)
        args = _prepare(work, sim, server.url)
        done = run(work, [*args, *_flags(RUNS[name]), "--yes", "--json"]).check(name)
    record = sim.record
    return {
        "wall": done.wall,
        "send": done.summary["seconds"],
        "ip_requests": record.requests - record.batches,
        "ip_429s": record.statuses[429],
        "confirmed": len(set(record.accepted["confirmCompromised"])),
        "not_done": _not_done(sim, RUNS[name]),
        "order": _order_violations(sim)
        if {"disable", "revoke-sessions"} <= set(RUNS[name])
        else "-",
        **_writes(record),
    }


class _Accepted:
    """Accepted (2xx) writes so far; call it holding the record's condition."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.seen = 0
        self.ok = 0

    def __call__(self) -> int:
        writes = self.record.writes
        self.ok += sum(200 <= w.status < 300 for w in writes[self.seen :])
        self.seen = len(writes)
        return self.ok


def killed_run(n: int, kills: int) -> dict[str, Any]:
    sim = _simulator(n)
    record = sim.record
    targets = [round((k - 0.5) * 2 * n / kills) for k in range(1, kills + 1)]
    moments: list[tuple[int, int, float]] = []  # (writes, IDs confirmed, seconds) at each kill
    walls = 0.0
    with tempfile.TemporaryDirectory() as tmp, RunningSimulator(sim) as server:
        work = Path(tmp)
        args = [*_prepare(work, sim, server.url), *_flags(CONTAIN), "--yes", "--json"]
        accepted = _Accepted(record)
        for k, target in enumerate(targets, 1):
            proc = start(work, args, f"run{k}")
            with record.changed:  # woken by every write; the timeout only notices an exit
                while accepted() < target and proc.popen.poll() is None:
                    record.changed.wait(timeout=1.0)
                count = accepted()
            if proc.popen.poll() is not None:
                raise SystemExit(f"run {k} ended before its kill: {proc.wait().stderr[-3000:]}")
            proc.kill()
            walls += proc.wait().wall
            moments.append((count, len(set(record.accepted["confirmCompromised"])), walls))
        final = start(work, args, f"run{kills + 1}").wait().check("the run after the kills")
        walls += final.wall
    per_step = Counter((w.user_id, w.op) for w in record.writes if 200 <= w.status < 300)
    confirmed = set(record.accepted["confirmCompromised"])
    return {
        "moments": moments,
        "lost": _not_done(sim, CONTAIN),
        "extra_writes": sum(c - 1 for c in per_step.values()),
        "extra_confirms": len(record.accepted["confirmCompromised"]) - len(confirmed),
        "order": _order_violations(sim),
        "write_requests": len(record.writes),
        "write_429s": sum(w.status == 429 for w in record.writes),
        "wall": walls,
        "final": final.summary,
    }


def _steps_table(n: int) -> None:
    results = {name: one_run(n, name) for name in RUNS}
    print(
        f"{n:,} members of a closed directory, from their object IDs; Identity Protection "
        f"1 request/s, directory writes {WRITES_PER_SECOND}/s (burst {WRITES_BURST}), "
        f"max_in_flight {MAX_IN_FLIGHT}\n\n"
        "| run | wall s | send s | IP requests | IP 429s | write requests | writes accepted | "
        "write 429s | lane busy s | write efficiency | users not done | order violations |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for name, r in results.items():
        eff = "-" if r["efficiency"] is None else f"{r['efficiency']:.3f}"
        busy = f"{r['busy']:.1f}" if r["busy"] else "-"
        print(
            f"| {name} | {r['wall']:.1f} | {r['send']:.1f} | {r['ip_requests']} | "
            f"{r['ip_429s']} | {r['write_requests']:,} | {r['writes_ok']:,} | "
            f"{r['write_429s']} | {busy} | {eff} | {r['not_done']} | {r['order']} |"
        )
    contain = results["--contain"]["wall"]
    slowest = max(SINGLE, key=lambda name: results[name]["wall"])
    single = contain / results[slowest]["wall"]
    pair = contain / results["disable + revoke-sessions"]["wall"]
    print(
        "\nwrite efficiency = writes accepted / (20/s x lane busy time); lane busy time = last "
        "write answered - first write answered + 1 s (the bucket's burst of 20 at 20/s).\n"
        f"--contain / slowest single step ({slowest}): {single:.3f} (goal <= 1.1: "
        f"{'met' if single <= 1.1 else 'NOT met'}); --contain / disable + revoke-sessions "
        f"(the slowest step per budget: both spend the one write budget): {pair:.3f} "
        f"(goal <= 1.1: {'met' if pair <= 1.1 else 'NOT met'})."
    )


def _kills_table(n: int, kills: int) -> None:
    r = killed_run(n, kills)
    bound_writes = kills * MAX_IN_FLIGHT * 20
    bound_confirms = kills * MAX_IN_FLIGHT * 60
    shown = ", ".join(
        f"{w:,} writes and {c:,} IDs confirmed ({t:.0f} s)" for w, c, t in r["moments"]
    )
    print(
        f"\n{kills} SIGKILLs during one `--contain` of {n:,} users, then the same command to "
        "the end\n\n"
        "| users | kills | users lost | extra writes (bound) | extra confirmed IDs (bound) | "
        "order violations | write requests | write 429s | wall s, all runs |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| {n:,} | {kills} | {r['lost']} | {r['extra_writes']} (<= {bound_writes}) | "
        f"{r['extra_confirms']} (<= {bound_confirms}) | {r['order']} | "
        f"{r['write_requests']:,} | {r['write_429s']} | {r['wall']:.1f} |\n\n"
        f"killed at (accepted so far; run time so far): {shown}. The last run, per "
        "action (done/failed/unknown/to send): "
        + "; ".join(
            f"{a} {x['done']}/{x['failed']}/{x['unknown']}/{x['to_send']}"
            for a, x in r["final"]["actions"].items()
        )
    )


def main() -> None:
    n = size("BENCH_CONTAIN_USERS", 3_000)
    kills = size("BENCH_CONTAIN_KILLS", 5)
    parts = os.environ.get("BENCH_CONTAIN_PARTS", "steps,kills").split(",")
    if "steps" in parts:
        _steps_table(n)
    if "kills" in parts:
        _kills_table(n, kills)
