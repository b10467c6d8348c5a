"""Shared test helpers: IDs and files, settings, an in-process rig (simulator + job), the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import polars as pl

from batcher.actions import ACTIONS, Budget, choose
from batcher.auth import StaticToken, TokenSource
from batcher.calls import Caller, RetrySettings, StopSignal
from batcher.config import Settings, SimulatorSettings
from batcher.control import Control
from batcher.eventlog import Observer, no_events
from batcher.graph import GraphClient, http_client
from batcher.job.ledgers import undo_ledger
from batcher.job.replay import ReplayOptions, replay
from batcher.job.run import RunOptions, run
from batcher.job.session import Route
from batcher.job.setup import Job, run_scope
from batcher.job.staged import ledger_of, plan
from batcher.job.summary import Summary, VerifySummary
from batcher.job.undo import undo, undo_actions
from batcher.job.verify import VerifyOptions, verify
from batcher.ledger import Ledger, RunRecord, RunScope
from batcher.pacer import Pacer
from batcher.simulator import SIMULATED_TENANT, DirectoryUser, GraphSimulator
from tests.virtual_time import VirtualTime

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_inputs"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEST_TOKEN = "test-token-5b2f7c1e"  # what the CLI sends and the simulator accepts
BATCHER = str(Path(sys.executable).parent / "batcher")  # the real console script
GRAPH = "http://graph.local"  # where in-process Graph lives

FAST = SimulatorSettings(
    rate_per_second=200.0,
    burst=5,
    latency_min_seconds=0.0,
    latency_max_seconds=0.005,
    directory_reads_per_second=2000.0,
    directory_reads_burst=200,
    directory_writes_per_second=2000.0,
    directory_writes_burst=200,
)


# A test's [send] and [directory]: quick rates, short timeouts and back-off.
SEND: dict[str, Any] = {
    "rate_per_second": 100.0,
    "max_in_flight": 4,
    "timeout_seconds": 5.0,
    "retry_for_seconds": 30.0,
    "backoff_initial_seconds": 0.01,
    "backoff_max_seconds": 0.1,
}
DIRECTORY: dict[str, Any] = {  # reads and writes: 1,000 a second, one JSON batch at once
    "read_units_per_window": 20,
    "read_window_seconds": 0.02,
    "writes_per_window": 20,
    "writes_window_seconds": 0.02,
}


def ids(n: int, seed: int = 1) -> list[str]:
    """``n`` distinct, stable, lower-case user IDs."""
    return [str(uuid.UUID(int=seed * 1_000_003 + i * 7919 + 1, version=4)) for i in range(n)]


def write_ids(path: Path, values: Iterable[str], header: str = "id") -> Path:
    path.write_text(header + "\n" + "\n".join(values) + "\n", encoding="utf-8")
    return path


def sim_settings(**changes: Any) -> SimulatorSettings:
    return FAST.model_copy(update=changes)


def settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """Settings for a test: Graph (in-process or ``[graph] base_url``), fast retries, the
    ledgers under ``tmp_path``, a static token for the simulated tenant (``[auth] tenant_id``
    names it: the token is not a JWT)."""
    sections.setdefault("auth", {"tenant_id": SIMULATED_TENANT})
    data: dict[str, dict[str, Any]] = {
        "graph": {"target": "graph", "base_url": "http://127.0.0.1:9", **sections.pop("graph", {})},
        "send": {**SEND, **sections.pop("send", {})},
        "directory": {**DIRECTORY, **sections.pop("directory", {})},
        "ledger": {"dir": str(tmp_path / "ledgers"), **sections.pop("ledger", {})},
        **sections,
    }
    return Settings.model_validate(data)


@dataclass
class Events:
    """An observer that keeps every event, for tests to read."""

    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, event: str, **fields: Any) -> None:
        self.seen.append((event, fields))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for name, fields in self.seen if name == event]


class Rig:
    """The simulator in-process and jobs that talk to it through its transport: the run,
    replay, undo and verify functions are called directly, as the CLI would call them."""

    def __init__(
        self,
        tmp_path: Path,
        sim: SimulatorSettings = FAST,
        users: Sequence[DirectoryUser] | None = None,
        *,
        simulator: GraphSimulator | None = None,
        **sections: dict[str, Any],
    ) -> None:
        self.tmp_path = tmp_path
        self.sim = simulator or GraphSimulator(sim, tokens={TEST_TOKEN}, users=users)
        self.settings = settings(tmp_path, **sections)
        self.events = Events()

    @property
    def record(self) -> Any:
        return self.sim.record

    @property
    def route(self) -> Route:
        """Graph through the simulator's in-process transport."""
        return Route(GRAPH, self.sim.transport())

    def job(
        self,
        actions: Sequence[str] = ("confirm",),
        ledger: Path | None = None,
        *,
        token: str = TEST_TOKEN,
        confirm: Any = None,
        stop: StopSignal | None = None,
    ) -> Job:
        chosen = choose(actions) if actions else ()
        tokens = StaticToken(token)
        return Job(
            self.settings,
            run_scope(self.settings, tokens, chosen),
            tokens,
            ledger,
            self.events,
            **({} if confirm is None else {"confirm": confirm}),
            stop=stop or StopSignal(),
            command_line="batcher run (test)",
        )

    def ledger_for(self, name: str = "incident") -> Path:
        return self.tmp_path / "ledgers" / f"{name}.sqlite"

    def run(
        self,
        inputs: Sequence[Path] | Path,
        actions: Sequence[str] = ("confirm",),
        ledger: Path | None = None,
        **options: Any,
    ) -> Summary:
        paths = (inputs,) if isinstance(inputs, Path) else tuple(inputs)
        job = self.job(actions, ledger or self.ledger_for(), **_job_options(options))
        return run(job, RunOptions(paths, **options), self.route)

    def replay(self, ledger: Path, **options: Any) -> Summary:
        names = tuple(_recorded(ledger))
        job = self.job(names, ledger, **_job_options(options))
        return replay(job, ReplayOptions(**options), self.route)

    def undo(self, ledger: Path, *, dry_run: bool = False, **options: Any) -> Summary:
        job = self.job(undo_actions(ledger), undo_ledger(ledger), **_job_options(options))
        return undo(job, ledger, dry_run=dry_run, route=self.route)

    def verify(self, ledger: Path, **options: Any) -> VerifySummary:
        job = self.job(tuple(_recorded(ledger)), ledger, **_job_options(options))
        return verify(job, VerifyOptions(**options), self.route)


def ledger_in_process(
    simulator: GraphSimulator,
    inputs: Path | Sequence[Path],
    actions: Sequence[str],
    ledger: Path,
    *,
    token: str = TEST_TOKEN,
    options: Mapping[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Summary:
    """A ledger made as `batcher run --yes` makes it, but in-process (the real job, the real
    SQLite ledger) against ``simulator`` (which a test may also serve on a port): the setup of
    an e2e test about a later command (undo, verify, report), which then runs at the real CLI.
    ``token``: the one the simulator accepts (e.g. the delegated one); ``options``: the run's
    options as the CLI passes them (e.g. include_admins=True for --include-admins, since="1d");
    ``sections``: settings beyond the tests' quick defaults, as for ``write_config``."""
    rig = Rig(ledger.parent, FAST, None, simulator=simulator, **sections)
    summary = rig.run(inputs, actions, ledger, token=token, **dict(options or {}))
    assert summary.stopped is None and not summary.interrupted, summary
    return summary


def plan_in_process(
    simulator: GraphSimulator, inputs: Path, actions: Sequence[str], out: Path
) -> dict[str, Any]:
    """A plan file written as `batcher plan INPUT -o OUT` writes it, but in-process (the real
    look-ups and guards, planfile's writer) against ``simulator``: the setup of an e2e test
    about `apply`, which then runs at the real CLI. Returns the plan's content."""
    rig = Rig(out.parent, FAST, None, simulator=simulator)
    job = rig.job(actions, ledger_of(out))
    return plan(job, RunOptions((inputs,)), out, route=rig.route).content


def _job_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options.pop(k) for k in ("token", "confirm", "stop") if k in options}


def _recorded(path: Path) -> tuple[str, ...]:
    reader = Ledger.open_existing(path)
    try:
        return tuple(a for a in reader.actions() if a in ACTIONS)
    finally:
        reader.close()


def states(ledger: Path, action: str | None = None) -> dict[str, str]:
    """user_id -> state of one action's steps (the only action's, by default)."""
    reader = Ledger.open_existing(ledger)
    try:
        known = reader.known_steps()
    finally:
        reader.close()
    if action is None:
        actions = set(known.get_column("action"))
        assert len(actions) <= 1, f"say which action: {actions}"
    else:
        known = known.filter(known["action"] == action)
    return dict(zip(known["user_id"], known["state"], strict=True))


def counts(ledger: Path) -> dict[str, dict[str, int]]:
    """Steps per action and state, zeros left out."""
    reader = Ledger.open_existing(ledger)
    try:
        every = reader.counts()
    finally:
        reader.close()
    return {a: {s: n for s, n in per.items() if n} for a, per in every.items()}


# -- the real CLI in a subprocess -----------------------------------------------------------------
def write_config(path: Path, url: str, **sections: dict[str, Any]) -> Path:
    """A config that sends to ``url`` with the token method, for the simulated tenant
    (``[auth] tenant_id``; ``auth={}`` leaves it to sign-in); extra keys per section."""
    sections.setdefault("auth", {"tenant_id": SIMULATED_TENANT})
    graph = {"target": "graph", "base_url": url, **sections.pop("graph", {})}
    send = {**SEND, **sections.pop("send", {})}
    directory = {**DIRECTORY, **sections.pop("directory", {})}
    ledger = {"dir": str(path.parent / "runs"), **sections.pop("ledger", {})}
    parts = {"graph": graph, "send": send, "directory": directory, "ledger": ledger, **sections}
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


# -- in-process parts for the lane and look-up tests ---------------------------------------------
def paced_caller(
    *,
    ip: float = 500.0,
    reads: float = 1000.0,
    writes: float = 1000.0,
    retry_for: float = 30.0,
    backoff: tuple[float, float] = (0.01, 0.05),
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    grace: float = 5.0,
    observer: Observer = no_events,
    time: VirtualTime | None = None,
) -> Caller:
    """A Caller with one pacer per budget at these rates and its own Control; with ``time``,
    the pacers and the back-offs run on that virtual clock (``sleep`` still wins for these)."""
    on: dict[str, Any] = {} if time is None else {"clock": time.clock, "sleep": time.sleep}
    if time is not None and sleep is anyio.sleep:
        sleep = time.sleep
    pacers = {
        Budget.IDENTITY_PROTECTION: Pacer(ip, **on),
        Budget.DIRECTORY_READS: Pacer(reads, **on),
        Budget.DIRECTORY_WRITES: Pacer(writes, **on),
    }
    return Caller(pacers, RetrySettings(retry_for, backoff, sleep), Control(grace, observer))


@contextlib.asynccontextmanager
async def graph_client(
    sim: GraphSimulator,
    tokens: TokenSource | None = None,
    timeout: float = 5.0,
    time: VirtualTime | None = None,
) -> AsyncIterator[GraphClient]:
    """The real Graph client (bearer auth, timeouts) talking to ``sim`` in-process (with
    ``time``: each request counted on the wire, so that clock stands still meanwhile)."""
    source = tokens or StaticToken(TEST_TOKEN)
    transport = sim.transport() if time is None else time.transport(sim.transport())
    async with http_client(source, timeout=timeout, transport=transport) as http:
        yield GraphClient(http, GRAPH, "v1.0")


def step_ledger(path: Path, steps: Mapping[str, Sequence[str]]) -> Ledger:
    """A new ledger (one run begun) with ``steps`` (action -> user IDs) planned."""
    ledger = Ledger.open(path, RunScope(tuple(steps), "t", "global", "v1.0"))
    ledger.begin_run(RunRecord("run", "digest"))
    users = list(dict.fromkeys(uid for uids in steps.values() for uid in uids))
    ledger.add_users(
        pl.DataFrame(
            {"user_id": users, "source_file": ["f"] * len(users), "source_row": range(len(users))}
        )
    )
    for action, uids in steps.items():
        ledger.add_steps(action, pl.Series(list(uids), dtype=pl.String))
    return ledger


# -- job-level tests: an oracle for the samples, and events that act (appended for them) ---------
GUID_TEXT = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def expected_ids(path: Path, column: str) -> list[str]:
    """An independent oracle: the unique valid object IDs of a CSV sample, first seen first."""
    import csv
    import re

    seen: dict[str, None] = {}
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            value = (row.get(column) or "").strip(" \t\u00a0\"'{}()").lower()
            value = value.removeprefix("urn:uuid:")
            if re.fullmatch(r"[0-9a-f]{32}", value):
                value = "-".join([value[:8], value[8:12], value[12:16], value[16:20], value[20:]])
            if re.fullmatch(GUID_TEXT, value) and value != "00000000-0000-0000-0000-000000000000":
                seen.setdefault(value)
    return list(seen)


class Hooked(Events):
    """Events that also do something when the ``n``-th event of a name is seen (e.g. ask a
    stop after a few answers): no sleeps, the run itself says when."""

    def __init__(self) -> None:
        super().__init__()
        self._hooks: list[tuple[str, int, Callable[[], None]]] = []

    def at(self, event: str, n: int, do: Callable[[], None]) -> None:
        self._hooks.append((event, n, do))

    def __call__(self, event: str, **fields: Any) -> None:
        super().__call__(event, **fields)
        seen = None
        for name, n, do in self._hooks:
            if name == event:
                seen = len(self.named(event)) if seen is None else seen
                if seen == n:
                    do()


def report_frame(ledger: Path) -> pl.DataFrame:
    """The ledger's report, as `batcher report` writes it."""
    reader = Ledger.open_existing(ledger)
    try:
        return reader.report()
    finally:
        reader.close()


def runs_of(ledger: Path) -> list[dict[str, object]]:
    reader = Ledger.open_existing(ledger)
    try:
        return reader.runs()
    finally:
        reader.close()
