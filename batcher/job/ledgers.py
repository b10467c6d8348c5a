"""Where a run's ledger is, and what the tenant's other recent ledgers already did."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from batcher.actions import ACTIONS, CONTAIN, action_named
from batcher.config import Settings
from batcher.errors import LedgerError
from batcher.ledger import Ledger, RunIdentity


def default_path(settings: Settings, inputs: Sequence[Path], identity: RunIdentity) -> Path:
    """One ledger per (input files, actions, tenant), in the ledger folder (never the current
    directory): re-running the same command finds it again from anywhere."""
    label = "contain" if set(identity.actions) == set(CONTAIN) else "+".join(identity.actions)
    return settings.ledger.folder / _name(inputs, label, identity.tenant)


def legacy_path(inputs: Sequence[Path], identity: RunIdentity) -> Path | None:
    """Where batcher 0.1 put this run's ledger (runs/ under the current directory)."""
    if len(identity.actions) != 1:
        return None
    legacy = action_named(identity.actions[0]).legacy
    return Path("runs") / _name(inputs, legacy, identity.tenant) if legacy else None


def _name(inputs: Sequence[Path], label: str, tenant: str) -> str:
    key = "\n".join([*sorted(str(p.resolve()) for p in inputs), label, tenant])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    stem = inputs[0].name.split(".")[0][:40] if inputs else "ids"
    short = tenant if len(tenant) <= 12 else tenant[:8]
    return f"{stem}-{label}-{short}-{digest}.sqlite"


def _ledgers(folders: Sequence[Path], own: Path) -> list[Path]:
    found = {p.resolve() for f in folders if f.is_dir() for p in f.glob("*.sqlite")}
    return sorted(found - {own.resolve()})


def done_elsewhere(
    own: Path, identity: RunIdentity, hours: float, folder: Path | None = None
) -> pl.DataFrame:
    """(user_id, action, ledger): steps of this run's actions that another ledger of the same
    tenant (beside ``own``, or in ``folder``) did within ``hours``, and that no later run
    reversed (an undo)."""
    since = (datetime.now(UTC) - timedelta(hours=hours)).isoformat(timespec="milliseconds")
    wanted = set(identity.actions)
    reversing = {ACTIONS[a].undo for a in wanted if ACTIONS[a].undo}
    frames = []
    for path in _ledgers([own.parent, *([folder] if folder else [])], own):
        try:
            other = Ledger.open_existing(path)
        except LedgerError:
            continue  # not a ledger of ours, or damaged: nothing to learn from it
        try:
            if other.meta().get("tenant") != identity.tenant:
                continue
            for action in set(other.actions()) & (wanted | reversing):
                done = other.done(action, since)
                frames.append(
                    done.select(
                        "user_id", "finished_at", action=pl.lit(action), ledger=pl.lit(str(path))
                    )
                )
        finally:
            other.close()
    schema = {"user_id": pl.String, "action": pl.String, "ledger": pl.String}
    if not frames:
        return pl.DataFrame(schema=schema)
    every = pl.concat(frames, how="diagonal_relaxed")
    latest = every.sort("finished_at").group_by("user_id", "action").last()
    kept = []
    for action in sorted(wanted):
        undo = ACTIONS[action].undo
        done = latest.filter(pl.col("action") == action)
        if undo is not None:
            undone = latest.filter(pl.col("action") == undo).select(
                "user_id", pl.col("finished_at").alias("undone_at")
            )
            done = done.join(undone, on="user_id", how="left").filter(
                pl.col("undone_at").is_null() | (pl.col("undone_at") < pl.col("finished_at"))
            )
        kept.append(done.select("user_id", "action", "ledger"))
    return pl.concat(kept) if kept else pl.DataFrame(schema=schema)


def recorded_actions(path: Path) -> tuple[str, ...]:
    """The actions a ledger records (for replay and verify, which act on what it holds)."""
    reader = Ledger.open_existing(path)
    try:
        return reader.actions()
    finally:
        reader.close()
