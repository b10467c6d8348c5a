"""Shared fixtures: a real Graph simulator on a loopback port, and the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batcher.config import SimulatorSettings
from batcher.simulator import GraphSimulator, RunningSimulator

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_inputs"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEST_TOKEN = "test-token-5b2f7c1e"  # what the CLI sends and the simulator accepts
BATCHER = str(Path(sys.executable).parent / "batcher")  # the real console script

FAST = SimulatorSettings(
    rate_per_second=200.0, burst=5, latency_min_seconds=0.0, latency_max_seconds=0.005
)


@pytest.fixture
def simulator_factory() -> Iterator[Any]:
    """Start simulators with given settings; each is stopped at the end of the test."""
    running: list[RunningSimulator] = []

    def start(settings: SimulatorSettings = FAST) -> RunningSimulator:
        server = RunningSimulator(GraphSimulator(settings, tokens={TEST_TOKEN}))
        server.__enter__()
        running.append(server)
        return server

    yield start
    for server in running:
        server.__exit__(None, None, None)


@pytest.fixture
def simulator(simulator_factory: Any) -> RunningSimulator:
    server: RunningSimulator = simulator_factory()
    return server


def write_config(path: Path, url: str, **sections: dict[str, Any]) -> Path:
    """A config that sends to ``url`` with the token method; extra keys per section."""
    graph = {"target": "graph", "base_url": url, **sections.pop("graph", {})}
    send = {
        "rate_per_second": 100.0,
        "max_in_flight": 4,
        "timeout_seconds": 5,
        "retry_for_seconds": 30,
        "backoff_initial_seconds": 0.01,
        "backoff_max_seconds": 0.1,
        **sections.pop("send", {}),
    }
    ledger = {"dir": str(path.parent / "runs"), **sections.pop("ledger", {})}
    parts = {"graph": graph, "send": send, "ledger": ledger, **sections}
    lines: list[str] = []
    for name, values in parts.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHER_")}
    env.update({"BATCHER_ACCESS_TOKEN": TEST_TOKEN, "NO_COLOR": "1", "COLUMNS": "200"})
    env.update(extra)
    return env


def run_cli(
    *args: str | Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    **popen: Any,
) -> CliResult:
    """Run the real ``batcher`` console script in a subprocess (``popen``: e.g. preexec_fn)."""
    proc = subprocess.run(
        [BATCHER, *map(str, args)],
        cwd=cwd,
        env=env if env is not None else cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **popen,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
