"""Where a run's ledger is, and what the tenant's other recent ledgers already did."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from batcher.actions import ACTIONS, CONTAIN, REMEDIATE, comes_after, reverse
from batcher.config import Settings
from batcher.errors import LedgerError
from batcher.ledger import TO_SEND, Ledger, RunScope, StepState
from batcher.ledger.reads import Reads
from batcher.report.files import sibling

KEYS = {"user_id": pl.String, "action": pl.String}
_TO_SEND = [s.value for s in TO_SEND]
# The tenant the built-in simulator's ledgers name (batcher.job.setup.tenant). That simulator
# starts empty in every process: what another run did to it is no tenant's state.
BUILT_IN_SIMULATOR = "simulator"


def default_path(
    settings: Settings, inputs: Sequence[Path], scope: RunScope, sources: Sequence[str] = ()
) -> Path:
    """One ledger per (input files, actions, tenant), in the ledger folder (never the current
    directory): re-running the same command finds it again from anywhere."""
    label = {frozenset(CONTAIN): "contain", frozenset(REMEDIATE): "remediate"}.get(
        frozenset(scope.actions), "+".join(scope.actions)
    )
    return settings.ledger.folder / _name(inputs, label, scope.tenant, sources)


def undo_ledger(original: Path) -> Path:
    """Where the undo of ``original`` is recorded: beside it, so the same undo resumes it."""
    return sibling(original, ".undo.sqlite")


def check_origin(path: Path, meta: Mapping[str, str], scope: RunScope, command: str) -> None:
    """Refuse to act on a ledger written for another tenant or cloud than the config signs in
    to (an undo of a rehearsal must not reach the real tenant); an offline dry run, whose
    tenant only signing in would tell, is not refused."""
    if not scope.tenant:
        return
    tenant, cloud = meta.get("tenant"), meta.get("cloud")
    if tenant != scope.tenant or (cloud is not None and cloud != scope.cloud):
        raise LedgerError(
            f"{path}: written for tenant {tenant} ({cloud} cloud), but the config signs in to "
            f"{scope.tenant} ({scope.cloud} cloud); {command} with the config of that run"
        )


def steps_undone_since(ledger: Reads) -> pl.DataFrame:
    """(user_id, action) of the steps ``ledger`` did that its undo ledger reversed afterwards:
    the same command sends them again."""
    path = undo_ledger(ledger.path)
    pairs = {a.name: b.name for a, b in reverse(ACTIONS[n] for n in ledger.actions())}
    if not pairs or not path.is_file():
        return pl.DataFrame(schema=KEYS)
    undo = Ledger.open_existing(path)
    try:
        return steps_reversed_since(ledger, undo, pairs)
    finally:
        undo.close()


def steps_reversed_since(steps: Reads, by: Reads, pairs: Mapping[str, str]) -> pl.DataFrame:
    """(user_id, action) of the steps ``steps`` did that ``by`` reversed afterwards: the step
    of the reversing action (``pairs``: action -> it) done later than the step itself."""
    frames = []
    for action, back in pairs.items():
        if action not in steps.actions() or back not in by.actions():
            continue
        undone = by.done(back).select("user_id", pl.col("finished_at").alias("undone_at"))
        frames.append(
            steps.done(action)
            .join(undone, on="user_id", maintain_order="left")
            # an older ledger may not say when: done again since would have said
            .filter(pl.col("finished_at").is_null() | (pl.col("undone_at") > pl.col("finished_at")))
            .select("user_id", action=pl.lit(action))
        )
    return pl.concat(frames) if frames else pl.DataFrame(schema=KEYS)


def plan_again(known: pl.DataFrame, undone: pl.DataFrame) -> pl.DataFrame:
    """``known`` (user_id, action, state) with the ``undone`` steps planned again: what
    ``Ledger.reopen`` would make of them, for a dry run that changes nothing."""
    if undone.height == 0:
        return known
    mark = undone.select("user_id", "action", reopen=pl.lit(True))
    return (
        known.join(mark, on=["user_id", "action"], how="left", maintain_order="left")
        .with_columns(
            state=pl.when(pl.col("reopen"))
            .then(pl.lit(StepState.PLANNED.value))
            .otherwise(pl.col("state"))
        )
        .drop("reopen")
    )


def _name(inputs: Sequence[Path], label: str, tenant: str, sources: Sequence[str] = ()) -> str:
    key = "\n".join([*sorted(str(p.resolve()) for p in inputs), label, tenant, *sources])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    stem = inputs[0].name.split(".")[0][:40] if inputs else "ids"
    if not inputs and sources:  # e.g. incident-42
        stem = re.sub(r"[^0-9A-Za-z]+", "-", sources[0]).strip("-")[:40]
    short = tenant if len(tenant) <= 12 else tenant[:8]
    return f"{stem}-{label}-{short}-{digest}.sqlite"


def _ledgers(folders: Sequence[Path], own: Path) -> list[Path]:
    found = {p.resolve() for f in folders if f.is_dir() for p in f.glob("*.sqlite")}
    return sorted(found - {own.resolve()})


def steps_done_elsewhere(
    own: Path, scope: RunScope, hours: float, folder: Path | None = None
) -> pl.DataFrame:
    """(user_id, action, ledger): steps of this run's actions that another ledger of the same
    tenant (beside ``own``, or in ``folder``) did within ``hours``, and that no later run
    reversed (an undo). The built-in simulator has no memory across runs, so none is looked
    for there (a resume of the same ledger still finds its own steps in it)."""
    schema = {"user_id": pl.String, "action": pl.String, "ledger": pl.String}
    if scope.tenant == BUILT_IN_SIMULATOR:
        return pl.DataFrame(schema=schema)
    since = (datetime.now(UTC) - timedelta(hours=hours)).isoformat(timespec="milliseconds")
    wanted = set(scope.actions)
    reversing = {r for a in wanted for r in _reversers(a)}
    frames = []
    for path in _ledgers([own.parent, *([folder] if folder else [])], own):
        try:
            other = Ledger.open_existing(path)
        except LedgerError:
            continue  # not a ledger of ours, or damaged: nothing to learn from it
        try:
            if other.meta().get("tenant") != scope.tenant:
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
    if not frames:
        return pl.DataFrame(schema=schema)
    every = pl.concat(frames, how="diagonal_relaxed")
    latest = every.sort("finished_at").group_by("user_id", "action").last()
    kept = []
    for action in sorted(wanted):
        done = latest.filter(pl.col("action") == action)
        reversers = _reversers(action)
        if reversers:
            undone = (
                latest.filter(pl.col("action").is_in(reversers))
                .group_by("user_id")
                .agg(pl.col("finished_at").max().alias("undone_at"))
            )
            done = done.join(undone, on="user_id", how="left").filter(
                pl.col("undone_at").is_null() | (pl.col("undone_at") < pl.col("finished_at"))
            )
        kept.append(done.select("user_id", "action", "ledger"))
    return pl.concat(kept) if kept else pl.DataFrame(schema=schema)


def _reversers(name: str) -> list[str]:
    """The actions whose later step reverses or voids what ``name`` did (its undo, and what
    the table says voids it)."""
    action = ACTIONS[name]
    return [*([action.undo] if action.undo else []), *action.voided_by]


def again_after(known: pl.DataFrame) -> pl.DataFrame:
    """(user_id, action) of the steps done in this ledger that must be sent again because the
    step they follow (revoke after disable) is to be sent again: a revoke is only as good as
    the moment it was sent, and the account was enabled in between."""
    frames = []
    for action in ACTIONS.values():
        chain = comes_after(action)
        if not chain:
            continue
        first = (
            known.filter(pl.col("action").is_in(chain) & pl.col("state").is_in(_TO_SEND))
            .select("user_id")
            .unique()
        )
        done = known.filter(
            (pl.col("action") == action.name) & (pl.col("state") == StepState.DONE.value)
        ).select("user_id")
        frames.append(done.join(first, on="user_id").select("user_id", action=pl.lit(action.name)))
    return pl.concat(frames) if frames else pl.DataFrame(schema=KEYS)


def by_ledger(elsewhere: pl.DataFrame, users: pl.DataFrame) -> list[str]:
    """The ledgers (of ``done_elsewhere``) that did a step for one of ``users``: the ones to
    name, not every recent ledger of the tenant."""
    ours = elsewhere.join(users.select("user_id").unique(), on="user_id", how="semi")
    return sorted(set(ours.get_column("ledger").to_list()))


def recorded_actions(path: Path) -> tuple[str, ...]:
    """The actions a ledger records (for replay and verify, which act on what it holds)."""
    reader = Ledger.open_existing(path)
    try:
        return reader.actions()
    finally:
        reader.close()
