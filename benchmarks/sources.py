"""Sources read straight from Graph, each the real CLI against a fresh simulator.

1. Risky users: BENCH_RISKY_USERS (default 5,000) users at risk (high), read with
   `--risky high` and confirmed, against the same run from an exported file of the same object
   IDs. Identity Protection: 1 request/s (simulator burst 1, ``[send] rate_per_second = 1``),
   the list's reads share it with confirm. Physical floor = (list pages + confirm requests) / 1
   request/s; the file run's floor is its confirm requests alone. Wall time is process start
   to exit.
2. Sign-ins: BENCH_SIGNIN_PAGES (default 200) pages of the sign-in logs (the simulator's page
   size BENCH_SIGNIN_PAGE_SIZE, default 10, one user each), read with `--signed-in-from`,
   on the reports budget (5 per 10 s: a window of 5 at once, then 0.5/s; simulator the same).
   Achieved rate = (pages - 5) / (last page's answer - first page's answer), from the
   --log-file; against the limit 0.5/s. The users are then disabled (directory writes).

BENCH_SOURCES_PARTS=risky,signins chooses the parts (default both).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path

from batcher.config import SimulatorSettings
from batcher.simulator import GraphSimulator, RunningSimulator
from batcher.simulator.directory import derived_id
from batcher.simulator.risky import risky_upns
from benchmarks.harness import TOKEN, run, size, write_column, write_config

IP_PAGE = 500
CONFIRM_IDS = 60
REPORTS_WINDOW, REPORTS_RATE = 5, 0.5


def _serve(settings: SimulatorSettings) -> RunningSimulator:
    return RunningSimulator(GraphSimulator(settings, tokens={TOKEN})).__enter__()


def _risky(users: int) -> None:
    settings = SimulatorSettings(rate_per_second=1.0, burst=1, risky_users={"high": users})
    pages = math.ceil(users / IP_PAGE)
    confirms = math.ceil(users / CONFIRM_IDS)
    rows = []
    for name in ("--risky high", "exported file"):
        server = _serve(settings)
        try:
            with tempfile.TemporaryDirectory() as folder:
                work = Path(folder)
                config = write_config(work, server.url, send={"rate_per_second": 1.0})
                args = ["run", "--config", str(config), "--action", "confirm", "--yes", "--json"]
                if name == "exported file":
                    ids = [derived_id(u) for u in risky_upns("high", users)]
                    args.insert(1, str(write_column(work / "risky.csv", "id", ids)))
                    floor = confirms
                else:
                    args += ["--risky", "high"]
                    floor = pages + confirms
                done = run(work, args).check(name)
                confirmed = sum(1 for v in server.simulator.record.risk_state.values() if v)
                rows.append((name, users, floor, done.wall, done.wall / floor, confirmed))
        finally:
            server.__exit__(None, None, None)
    print("| run | users | floor (s) | wall (s) | wall / floor | confirmed |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, floor, wall, ratio, confirmed in rows:
        print(f"| {name} | {n:,} | {floor} | {wall:.1f} | {ratio:.3f} | {confirmed:,} |")


def _sign_ins(pages: int, page_size: int) -> None:
    settings = SimulatorSettings(
        sign_ins={"203.0.113.7": pages * page_size - 1},  # and one failed sign-in
        sign_ins_page_size=page_size,
        directory_writes_per_second=1000.0,
        directory_writes_burst=5000,
    )
    server = _serve(settings)
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            config = write_config(work, server.url)
            log = work / "events.jsonl"
            args = ["run", "--config", str(config), "--signed-in-from", "203.0.113.0/24"]
            args += ["--since", "3d", "--action", "disable", "--yes", "--json"]
            done = run(work, [*args, "--log-file", str(log)]).check("--signed-in-from")
            times = [
                datetime.fromisoformat(e["time"])
                for e in map(json.loads, log.read_text(encoding="utf-8").splitlines())
                if e.get("event") == "request" and e.get("source") == "sign_ins"
            ]
    finally:
        server.__exit__(None, None, None)
    span = (times[-1] - times[0]).total_seconds()
    rate = (len(times) - REPORTS_WINDOW) / span
    print("| pages | users | wall (s) | span of pages (s) | rate (/s) | limit (/s) | of limit |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {len(times)} | {done.summary.get('users', 0):,} | {done.wall:.1f} | {span:.1f} | "
        f"{rate:.4f} | {REPORTS_RATE} | {rate / REPORTS_RATE:.3f} |"
    )


def main() -> None:
    parts = os.environ.get("BENCH_SOURCES_PARTS", "risky,signins").split(",")
    if "risky" in parts:
        _risky(size("BENCH_RISKY_USERS", 5000))
    if "signins" in parts:
        _sign_ins(size("BENCH_SIGNIN_PAGES", 200), size("BENCH_SIGNIN_PAGE_SIZE", 10))
