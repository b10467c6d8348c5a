"""Send efficiency against a simulator that enforces R requests/s with burst 1.

Runs the real CLI in a subprocess against the simulator on a loopback port and reports
ideal time (batches / R), the run's sending time, efficiency and the share of requests throttled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from batcher.config import SimulatorSettings
from batcher.simulator import GraphSimulator, RunningSimulator

TOKEN = "bench-token"


def run_once(rate: float, batches: int, latency: tuple[float, float]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ids = [str(uuid.uuid4()) for _ in range(batches * 60)]
        (work / "ids.csv").write_text("id\n" + "\n".join(ids) + "\n", encoding="utf-8")
        settings = SimulatorSettings(
            rate_per_second=rate,
            burst=1,
            latency_min_seconds=latency[0],
            latency_max_seconds=latency[1],
        )
        with RunningSimulator(GraphSimulator(settings, tokens={TOKEN})) as sim:
            (work / "config.toml").write_text(
                f'[graph]\ntarget = "graph"\nbase_url = "{sim.url}"\n'
                f"[send]\nrate_per_second = {rate}\nmax_in_flight = 8\n"
                '[ledger]\ndir = "runs"\n',
                encoding="utf-8",
            )
            proc = subprocess.run(
                [
                    str(Path(sys.executable).parent / "batcher"),
                    "run",
                    "--yes",
                    "ids.csv",
                    "--json",
                    "--config",
                    "config.toml",
                ],
                cwd=work,
                env={**os.environ, "BATCHER_ACCESS_TOKEN": TOKEN},
                capture_output=True,
                text=True,
                check=False,
            )
            summary = json.loads(proc.stdout)
            record = sim.simulator.record
        ideal = batches / rate
        return {
            "rate": rate,
            "batches": batches,
            "confirmed": summary["confirmed"],
            "ideal_s": ideal,
            "actual_s": summary["seconds"],
            "efficiency": ideal / summary["seconds"],
            "throttled_pct": 100 * record.statuses[429] / max(1, record.requests),
        }


def main() -> None:
    rate = float(os.environ.get("BENCH_RATE", "2"))
    batches = int(os.environ.get("BENCH_BATCHES", "120"))
    result = run_once(rate, batches, (0.05, 1.5))
    print(
        "| R (req/s) | batches | ideal s | actual s | efficiency | throttled % |\n"
        "|---|---|---|---|---|---|\n"
        f"| {result['rate']:g} | {result['batches']} | {result['ideal_s']:.1f} | "
        f"{result['actual_s']:.1f} | {result['efficiency']:.3f} | "
        f"{result['throttled_pct']:.1f} |"
    )
