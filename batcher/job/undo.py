"""`batcher undo`: reverse what a ledger did, where it can be reversed, in an undo ledger."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
import polars as pl

from batcher.actions import ACTIONS, reverse
from batcher.errors import LedgerError
from batcher.job.execute import Facts, config_digest, execute, summarise
from batcher.job.guards import guard_plan
from batcher.job.ledgers import check_origin, plan_again, steps_reversed_since
from batcher.job.session import Route, Session, budget_specs, signed_in
from batcher.job.setup import Job
from batcher.job.summary import Inputs, Summary
from batcher.ledger import ItemState, Ledger, RunRecord
from batcher.plan import USER_COLUMNS, Plan, action_plan, direct_users
from batcher.workers.before import applied_now

UNDO_OF = "undo_of"
NO_STEPS = pl.DataFrame(schema={"user_id": pl.String, "action": pl.String, "state": pl.String})


def undo_actions(original: Path) -> tuple[str, ...]:
    """The actions that reverse what ``original`` did, in the table's order."""
    reader = Ledger.open_existing(original)
    try:
        meta, actions = reader.meta(), reader.actions()
    finally:
        reader.close()
    if UNDO_OF in meta:
        raise LedgerError(
            f"{original}: is the undo ledger of {meta[UNDO_OF]}; an undo cannot be undone: "
            "run the original actions again with `batcher run`"
        )
    pairs = reverse(ACTIONS[a] for a in actions)
    if not pairs:
        why = "; ".join(f"{a}: {ACTIONS[a].cannot_undo}" for a in actions)
        raise LedgerError(f"{original}: nothing it did can be undone ({why})")
    undone = {back.name for _, back in pairs}
    return tuple(name for name in ACTIONS if name in undone)


def undo(
    job: Job,
    original: Path,
    *,
    dry_run: bool = False,
    route: Route | None = None,
    include_admins: bool = False,
) -> Summary:
    """Reverse every step ``original`` did or may have done (unknown: Graph may have applied
    it, and reversing is safe to repeat). ``original`` stays locked meanwhile, so its run
    cannot go on while the undo reverses it; a dry run only reads it (it changes nothing)."""
    if not dry_run:  # a dry run sends nothing: the tenant is checked if it is known
        job = signed_in(job, route=route)
    reader = Ledger.open_existing(original)  # read before anything is written, even a lock
    try:
        check_origin(original, reader.meta(), job.scope, "undo")
        if dry_run:
            return _dry_run(job, reader)
    finally:
        reader.close()
    holder = Ledger.open(original)  # its writer lock: refused while a run still writes it
    try:
        holder.recover()
        return anyio.run(_undo, job, holder, route, include_admins)
    finally:
        holder.close()


def _dry_run(job: Job, original: Ledger) -> Summary:
    """The undo's plan from ``original`` as a reader sees it (what a kill left 'sending' counts
    as unknown when it may have been applied)."""
    known, exists = NO_STEPS, job.ledger is not None and job.ledger.exists()
    if exists:
        assert job.ledger is not None
        reader = Ledger.open_existing(job.ledger)
        try:
            known = plan_again(reader.known_steps(), _redone_later(reader, original))
        finally:
            reader.close()
    plan, facts = _plan(job, original, known)
    facts = replace(facts, dry_run=True, ledger_exists=exists)
    return summarise(job, plan, facts, budget_specs(job.settings))


async def _undo(job: Job, original: Ledger, route: Route | None, include_admins: bool) -> Summary:
    assert job.ledger is not None
    ledger = Ledger.open(job.ledger, job.scope)
    try:
        ledger.recover()
        ledger.reopen(_redone_later(ledger, original).rows())
        ledger.set_meta(UNDO_OF, str(original.path))
        _carry_items(original, ledger)
        record = RunRecord("undo", config_digest(job.settings), command_line=job.command_line)
        async with Session(job, route) as session:
            seen = await _read_unknown(session, original)
            plan, facts = _plan(job, original, ledger.known_steps(), seen)
            # enable, dismiss and enable-mail-rules restore access: no administrator is held
            # back from them (only from an undo's disable); a protected user gets no write
            plan, facts = await guard_plan(session, plan, facts, original.lookups(), include_admins)
            return await execute(session, ledger, plan, facts, record)
    finally:
        ledger.close()


async def _read_unknown(session: Session, original: Ledger) -> dict[str, set[str]]:
    """Per action undone, the users whose step is unknown (Graph may have applied it) that
    read now as the action leaves them: read before anything is reversed."""
    seen: dict[str, set[str]] = {}
    for forward, _ in reverse(ACTIONS[a] for a in original.actions()):
        steps = original.undoable(forward.name)
        unknown = steps.filter(pl.col("state") == "unknown").get_column("user_id").to_list()
        if not unknown:
            seen[forward.name] = set()
            continue
        client, control = await session.client(), session.control()
        with session.job.stop.attached(control), control.scope():
            seen[forward.name] = await applied_now(
                client, session.caller(control), forward, unknown
            )
        if control.breaker.tripped is not None:
            raise control.breaker.tripped
    return seen


def _carry_items(original: Ledger, undo_ledger: Ledger) -> None:
    """An undo of a list-then-act step acts on exactly the items the original acted on (the
    rules it disabled, or may have): recorded as the undo's list, so it reads no new one."""
    for forward, back in reverse(ACTIONS[a] for a in original.actions()):
        if back.lists is None or back.lists.undoes != forward.name:
            continue
        acted = [ItemState.DONE, ItemState.UNKNOWN]
        for uid in original.undoable(forward.name).get_column("user_id").to_list():
            items = [
                replace(i, state=ItemState.PLANNED, reason=f"{i.state} in {original.path.name}")
                for i in original.items_of(uid, forward.name, acted)
            ]
            undo_ledger.record_listing(uid, back.name, items)


def _redone_later(undo: Ledger, original: Ledger) -> pl.DataFrame:
    """(user_id, action) of the undo's steps that the original's run did again afterwards (its
    same command, re-run after this undo): the undo reverses them again."""
    pairs = {
        back.name: forward.name for forward, back in reverse(ACTIONS[a] for a in original.actions())
    }
    return steps_reversed_since(undo, original, pairs)


def _plan(
    job: Job, original: Ledger, known: pl.DataFrame, seen: dict[str, set[str]] | None = None
) -> tuple[Plan, Facts]:
    """Each reversing action with the users whose step Graph applied, or may have applied and
    reads now as applied (``seen``, per action; None: a dry run, which reads nothing and
    says they will be read first). What the run found already so stays so."""
    notes, frames, plans = [], [], []
    for forward, back in reverse(ACTIONS[a] for a in original.actions()):
        steps = original.undoable(forward.name)
        already = original.already(forward.name)
        if already:
            stayed = steps.filter(pl.col("user_id").is_in(sorted(already))).height
            steps = steps.filter(~pl.col("user_id").is_in(sorted(already)))
            if stayed:
                notes.append(
                    f"{stayed:,} users already read {forward.check.describe()} before the run; "
                    "they stay so"
                )
        in_doubt = steps.filter(pl.col("state") == "unknown")
        unknown = in_doubt.height
        if seen is not None and unknown:
            applied = seen.get(forward.name, set())
            steps = steps.filter(
                (pl.col("state") != "unknown") | pl.col("user_id").is_in(sorted(applied))
            )
            left = unknown - steps.filter(pl.col("state") == "unknown").height
            unknown -= left
            if left:
                notes.append(
                    f"{left:,} {forward.name} steps in doubt were read before reversing and do "
                    f"not show {forward.check.describe()} (or could not be read): {back.name} "
                    "is not sent to them"
                )
        elif unknown:
            notes.append(
                f"{unknown:,} {forward.name} steps in doubt will be read before reversing: "
                f"only those that show {forward.check.describe()} get {back.name}"
            )
        if back.keeps_disabled:  # an account disabled before the run stays disabled
            before = steps.filter(pl.col("account_enabled").eq(False))
            if before.height:
                notes.append(
                    f"{before.height:,} accounts were already disabled before the run; "
                    "they stay disabled"
                )
            steps = steps.filter(pl.col("account_enabled").ne(False).fill_null(True))
        users = direct_users(
            steps.select(
                "user_id",
                pl.lit(str(original.path)).alias("source_file"),
                pl.int_range(1, steps.height + 1, dtype=pl.Int64).alias("source_row"),
            )
        )
        frames.append(users)
        plans.append(action_plan(users, known, back, job.settings.send.batch_size))
        notes.append(
            f"{back.name}: {steps.height:,} users ({steps.height - unknown:,} {forward.name} "
            f"done, {unknown:,} unknown: Graph may have applied them)"
        )
    for kept in (ACTIONS[a] for a in original.actions()):
        if kept.cannot_undo is not None:
            notes.append(f"{kept.cannot_undo}: {kept.name} cannot be undone")
    users = pl.concat(frames) if frames else pl.DataFrame(schema=USER_COLUMNS)
    users = users.unique("user_id", keep="first", maintain_order=True)
    new = users.join(known.select("user_id").unique(), on="user_id", how="anti")
    facts = Facts("undo", Inputs(users=users.height), notes=tuple(notes))
    return Plan(new, tuple(plans)), facts
