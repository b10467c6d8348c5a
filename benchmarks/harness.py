"""What the CLI benchmarks share: a work folder with a config, the real CLI in a subprocess.

Every run gets its own folder and its ledgers stay in it (``[ledger] dir``): a run reads the
tenant's other recent ledgers in that folder and skips what they did, so runs that share a
folder (or the per-user default) would measure each other's leftovers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batcher.simulator import DirectoryUser

TOKEN = "bench-token"
BATCHER = str(Path(sys.executable).parent / "batcher")


def size(name: str, default: int) -> int:
    """A size from the environment (to develop at smaller sizes); the default is the issue's."""
    return int(os.environ.get(name, str(default)))


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_config(work: Path, url: str, **tables: Mapping[str, object]) -> Path:
    """``work/config.toml`` aimed at the simulator at ``url``, ledgers in ``work/ledgers``;
    ``tables`` adds keys, e.g. ``send={"rate_per_second": 1}``."""
    sections: dict[str, dict[str, object]] = {
        "graph": {"target": "graph", "base_url": url},
        "ledger": {"dir": "ledgers"},
    }
    for name, values in tables.items():
        sections.setdefault(name, {}).update(values)
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
        for name, values in sections.items()
    )
    path = work / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def write_column(path: Path, header: str, values: Sequence[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(values) + "\n", encoding="utf-8")
    return path


def members(n: int, domain: str = "contoso.com") -> list[DirectoryUser]:
    """``n`` enabled members of a closed directory (object IDs derived from the UPNs)."""
    return [DirectoryUser(userPrincipalName=f"user{i:06d}@{domain}") for i in range(n)]


def result_of(line: str) -> dict[str, Any]:
    """The --json envelope's result, its ``inputs`` counts beside the other keys."""
    result: dict[str, Any] = json.loads(line).get("result") or {}
    return {**result.get("inputs", {}), **result}


@dataclass
class Process:
    """One `batcher` process: its command, when it started, and where its output goes."""

    popen: subprocess.Popen[bytes]
    started: float
    work: Path
    name: str

    def wait(self, timeout: float = 3600) -> Finished:
        code = self.popen.wait(timeout=timeout)
        wall = time.monotonic() - self.started
        out = (self.work / f"{self.name}.stdout").read_text(encoding="utf-8")
        err = (self.work / f"{self.name}.stderr").read_text(encoding="utf-8")
        summary = result_of(out.strip().splitlines()[-1]) if out.strip() else {}
        return Finished(code, wall, summary, err)

    def kill(self) -> None:
        """SIGKILL this process (and only it), then reap it."""
        self.popen.kill()
        self.popen.wait(timeout=60)


@dataclass
class Finished:
    returncode: int
    wall: float  # seconds from process start to exit
    summary: dict[str, Any] = field(default_factory=dict)  # the --json line, if any
    stderr: str = ""

    def check(self, what: str) -> Finished:
        if self.returncode != 0:
            raise SystemExit(f"{what}: batcher exited {self.returncode}: {self.stderr[-3000:]}")
        return self


def start(work: Path, args: Sequence[str], name: str = "batcher") -> Process:
    """Start ``batcher ARGS`` in ``work``; stdout and stderr go to files there (a pipe nobody
    reads would block it)."""
    with (
        (work / f"{name}.stdout").open("wb") as out,
        (work / f"{name}.stderr").open("wb") as err,
    ):
        started = time.monotonic()
        popen = subprocess.Popen(
            [BATCHER, *args],
            cwd=work,
            env={**os.environ, "BATCHER_ACCESS_TOKEN": TOKEN},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    return Process(popen, started, work, name)


def run(work: Path, args: Sequence[str], name: str = "batcher") -> Finished:
    return start(work, args, name).wait()


def events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a --log-file."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
