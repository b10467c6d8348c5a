"""Issue: contain at the speed Graph allows. Graph's write window (3,000 per 150 s, i.e. a
bucket of 3,000 refilling at 20/s) enforced by the simulator on a real port, latency 0.1-0.3 s,
side by side with a plain msgraph-sdk script (one PATCH per user, 20 at a time).

1. 1,200 users disabled: the whole command (process start to exit) against the script.
2. 1,200 users, ``--action disable --action revoke-sessions``: sending time (first write
   reaching Graph to the last answered, from the simulator's record).
3. 4,000 users disabled: sending time against the window's floor ((4,000 - 3,000) / 20/s),
   throttled (inner 429s) and failed.

BENCH_WINDOW_USERS / BENCH_WINDOW_BIG (defaults 1,200 / 4,000) change the sizes.
Needs the ``bench`` extra for the script (``make bench`` installs it).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from batcher.config import SimulatorSettings
from batcher.simulator import GraphSimulator, Record, RunningSimulator
from benchmarks.harness import TOKEN, members, run, size, write_column, write_config
from benchmarks.msgraph_sdk import _auth_provider, _graph_root

LATENCY = (0.1, 0.3)
WINDOW, RATE = 3000, 20.0
SDK_AT_ONCE = 20


def _simulator(n: int) -> GraphSimulator:
    settings = SimulatorSettings(
        latency_min_seconds=LATENCY[0],
        latency_max_seconds=LATENCY[1],
        directory_writes_per_second=RATE,
        directory_writes_burst=WINDOW,
        seed=1,
    )
    return GraphSimulator(settings, tokens={TOKEN}, users=members(n))


def _sending(record: Record) -> float:
    """First write answered (less its latency, at most) to the last one answered."""
    at = [w.at for w in record.writes]
    return max(at) - min(at) + LATENCY[1] if at else 0.0


def _writes(record: Record) -> dict[str, Any]:
    ok = sum(200 <= w.status < 300 for w in record.writes)
    throttled = sum(w.status == 429 for w in record.writes)
    return {"ok": ok, "throttled": throttled, "sent": len(record.writes)}


def batcher_run(n: int, actions: tuple[str, ...]) -> dict[str, Any]:
    sim = _simulator(n)
    with tempfile.TemporaryDirectory() as tmp, RunningSimulator(sim) as server:
        work = Path(tmp)
        write_column(work / "users.csv", "id", [u.id for u in sim.directory])
        config = write_config(work, server.url)  # every budget at its default: Graph's figures
        flags = [f for a in actions for f in ("--action", a)]
        args = ["run", "users.csv", "--config", str(config), "--ledger", "ledger.sqlite"]
        done = run(work, [*args, *flags, "--yes", "--json"]).check(" + ".join(actions))
    failed = sum(per.get("failed", 0) + per.get("unknown", 0) for per in _counts(done.summary))
    disabled = sum(not u.accountEnabled for u in sim.directory)
    return {
        "wall": done.wall,
        "sending": _sending(sim.record),
        "disabled": disabled,
        "failed": failed,
        **_writes(sim.record),
    }


def _counts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return list(summary.get("actions", {}).values())


def sdk_run(n: int) -> dict[str, Any]:
    sim = _simulator(n)
    with RunningSimulator(sim) as server:
        started = time.monotonic()
        failed = asyncio.run(_patch_all(_graph_root(server.url), [u.id for u in sim.directory]))
        wall = time.monotonic() - started
    disabled = sum(not u.accountEnabled for u in sim.directory)
    return {
        "wall": wall,
        "sending": _sending(sim.record),
        "disabled": disabled,
        "failed": failed,
        **_writes(sim.record),
    }


async def _patch_all(root: str, user_ids: list[str]) -> int:
    """The plain script: msgraph-sdk, one PATCH per user, ``SDK_AT_ONCE`` at a time."""
    from urllib.parse import urlsplit

    import httpx
    from kiota_abstractions.api_error import APIError
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph import graph_request_adapter as sdk_adapter
    from msgraph.generated.models.user import User
    from msgraph_core import GraphClientFactory

    http_client = GraphClientFactory.create_with_default_middleware(options=sdk_adapter.options)
    http_client.base_url = httpx.URL(root)
    adapter = GraphRequestAdapter(_auth_provider(TOKEN, urlsplit(root).hostname or ""), http_client)
    adapter.base_url = root
    client = GraphServiceClient(request_adapter=adapter)
    gate = asyncio.Semaphore(SDK_AT_ONCE)
    failed = 0

    async def one(uid: str) -> None:
        nonlocal failed
        async with gate:
            try:
                await client.users.by_user_id(uid).patch(User(account_enabled=False))
            except (APIError, httpx.TransportError):
                failed += 1

    try:
        await asyncio.gather(*(one(uid) for uid in user_ids))
    finally:
        await http_client.aclose()
    return failed


def main() -> None:
    try:
        import msgraph  # noqa: F401
    except ModuleNotFoundError:
        print("msgraph-sdk is not installed: `make bench` installs the bench extra", flush=True)
        return
    n, big = size("BENCH_WINDOW_USERS", 1200), size("BENCH_WINDOW_BIG", 4000)
    rows = [
        (f"msgraph-sdk script, PATCH per user, {SDK_AT_ONCE} at a time: disable {n:,}", sdk_run(n)),
        (f"batcher: disable {n:,}", batcher_run(n, ("disable",))),
        (
            f"batcher: disable + revoke-sessions {n:,}",
            batcher_run(n, ("disable", "revoke-sessions")),
        ),
        (f"batcher: disable {big:,}", batcher_run(big, ("disable",))),
    ]
    floor = max(0, big - WINDOW) / RATE
    print(
        f"Graph's write window {WINDOW:,} per {WINDOW / RATE:g} s (burst {WINDOW:,}, {RATE:g}/s), "
        f"latency {LATENCY[0]}-{LATENCY[1]} s; floor for {big:,} users: {floor:.0f} s\n\n"
        "| run | wall s (start to exit) | sending s | disabled | writes sent | writes ok | "
        "throttled (429) | failed |\n|---|---|---|---|---|---|---|---|"
    )
    for name, r in rows:
        print(
            f"| {name} | {r['wall']:.1f} | {r['sending']:.1f} | {r['disabled']:,} | {r['sent']:,} "
            f"| {r['ok']:,} | {r['throttled']:,} | {r['failed']:,} |",
            flush=True,
        )
    sdk, one, both, large = (r for _, r in rows)
    print(
        f"\nbatcher / script (whole command): {one['wall'] / sdk['wall']:.2f} (target <= 0.33); "
        f"disable + revoke sending {both['sending']:.1f} s (target <= 5); "
        f"{big:,} users sending {large['sending']:.1f} s = {large['sending'] / floor:.2f} x floor "
        f"(target <= 1.1), throttled {large['throttled'] / max(1, large['sent']):.1%} "
        "(target <= 1%)"
        if floor
        else ""
    )


if __name__ == "__main__":
    main()
