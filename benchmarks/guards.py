"""The guards' role check: the requests and time it takes to find the holders of privileged
directory roles among BENCH_GUARD_USERS (default 10,000) users, against the simulator with
BENCH_GUARD_ADMINS (default 60) active and as many eligible assignments, at the default directory
budgets and the simulator's default latency (0.05-0.3 s per request). The goal: a few listings
(1 + 2 per privileged role), never one read per user."""

from __future__ import annotations

import os
import time

import anyio
import polars as pl

from batcher.auth import SIMULATOR_TOKEN, StaticToken
from batcher.config import Settings, SimulatorSettings
from batcher.graph import GraphClient
from batcher.job.session import Route, Session
from batcher.job.setup import Job
from batcher.ledger import RunScope
from batcher.safety import decide
from batcher.simulator import GraphSimulator
from batcher.workers.guards import PRIVILEGED, GuardReader


async def _measure(users: int, admins: int) -> tuple[int, float, int]:
    upns = [f"user.{i:06d}@contoso.com" for i in range(users)]
    roles = sorted(PRIVILEGED)
    active = {upns[i]: [roles[i % len(roles)]] for i in range(admins)}
    eligible = {upns[-1 - i]: [roles[i % len(roles)]] for i in range(admins)}
    sim = GraphSimulator(
        SimulatorSettings(role_holders=active, eligible_role_holders=eligible),
        tokens={SIMULATOR_TOKEN},
    )
    settings = Settings()
    job = Job(
        settings, RunScope(("disable",), "", "global", "v1.0"), StaticToken(SIMULATOR_TOKEN), None
    )
    async with Session(job, Route("http://graph.invalid", sim.transport())) as session:
        started = time.monotonic()
        client: GraphClient = await session.client()
        control = session.control()
        reader = GuardReader(client, session.caller(control))
        with control.scope():
            await reader.role_holders()
        ids = pl.Series([u.id for u in (sim.directory.lookup(u) for u in upns) if u is not None])
        verdicts = decide(ids, {}, reader.found.roles)
        seconds = time.monotonic() - started
    held = verdicts.filter(pl.col("verdict") == "held_back").height
    return reader.found.requests, seconds, held


def main() -> None:
    users = int(os.environ.get("BENCH_GUARD_USERS", "10000"))
    admins = int(os.environ.get("BENCH_GUARD_ADMINS", "60"))
    requests, seconds, held = anyio.run(_measure, users, admins)
    print("| users | privileged assignments | requests | seconds | held back |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {users:,} | {2 * admins} | {requests} | {seconds:.1f} | {held} |")
