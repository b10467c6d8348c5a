"""`batcher plan` + `batcher apply` against `batcher run` on the same input: the phishing
sample (confirm) and BENCH_STAGED_USERS (default 2,000) generated UPNs (disable), each on a
fresh simulated directory (open for the sample, closed for the list) at Graph's default
budgets (latency 0.05-0.3 s). Wall time of each real CLI process, start to exit; plan +
apply is the sum of its two processes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from batcher.config import SimulatorSettings
from batcher.simulator import GraphSimulator, RunningSimulator
from benchmarks.harness import TOKEN, members, run, size, write_column, write_config

REPO = Path(__file__).resolve().parent.parent

CASES = (
    ("phishing sample, confirm", "phishing", ("--action", "confirm")),
    ("generated UPNs, disable", "generated", ("--action", "disable")),
)


def _once(work: Path, source: str, actions: tuple[str, ...], staged: bool) -> float:
    n = size("BENCH_STAGED_USERS", 2000)
    users = members(n)
    settings = SimulatorSettings(rate_per_second=1.0, burst=1)
    directory = None if source == "phishing" else users  # open: the sample's UPNs all exist
    with RunningSimulator(GraphSimulator(settings, tokens={TOKEN}, users=directory)) as server:
        config = str(write_config(work, server.url))
        if source == "phishing":
            given = str(REPO / "sample_inputs" / "phishing_recipients.csv")
        else:
            given = str(
                write_column(work / "upns.csv", "upn", [u.userPrincipalName for u in users])
            )
        cap = ("--yes", "--max-users", str(n + 1000))
        if not staged:
            return (
                run(work, ["run", given, *actions, "--config", config, *cap, "--json"])
                .check("run")
                .wall
            )
        plan = run(work, ["plan", given, *actions, "--config", config, "-o", "p.json"], "plan")
        applied = run(work, ["apply", "p.json", "--config", config, *cap, "--json"], "apply")
        return plan.check("plan").wall + applied.check("apply").wall


def main() -> None:
    print("| input | run (s) | plan + apply (s) |")
    print("|---|---:|---:|")
    for label, source, actions in CASES:
        times = []
        for staged in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                times.append(_once(Path(folder), source, actions, staged))
        print(f"| {label} | {times[0]:.1f} | {times[1]:.1f} |", flush=True)
