"""`batcher verify`: read back every step a ledger did, per action, and say what was not read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anyio
import polars as pl

from batcher.actions import ACTIONS, Read
from batcher.errors import LedgerError
from batcher.job.ledgers import check_origin
from batcher.job.session import Route, Session, signed_in
from batcher.job.setup import Job
from batcher.job.summary import VerifySummary
from batcher.ledger import ItemState, Ledger, StepState
from batcher.report.files import check_report_path, read_report, sibling, write_report
from batcher.workers.readback import NOT_READ, VERIFY_COLUMNS, Reading, Verifier
from batcher.workers.relist import relist


@dataclass(frozen=True)
class VerifyOptions:
    out: Path | None = None
    unread: bool = False  # read only what the last verify did not read


def verify(job: Job, options: VerifyOptions, route: Route | None = None) -> VerifySummary:
    if options.out is not None:
        check_report_path(options.out)
    job = signed_in(job, route=route)
    assert job.ledger is not None
    reader = Ledger.open_existing(job.ledger)
    try:
        check_origin(job.ledger, reader.meta(), job.scope, "verify")
        actions = reader.actions()
        applied = {a: reader.applied(a) for a in actions}  # done, and unknown: in doubt
        acted = {a: _acted(reader, a, applied[a]) for a in actions if ACTIONS[a].lists}
        counts = reader.counts()
    finally:
        reader.close()
    report = options.out or sibling(job.ledger, ".verify.csv")
    earlier = _earlier(report) if options.unread else None
    if earlier is not None:
        applied = _unread_only(applied, earlier)
    expected = {a: ACTIONS[a].check.describe() for a in actions}
    if not any(frame.height for frame in applied.values()):
        waiting = sum(c[StepState.PLANNED] for c in counts.values())
        reason = (
            f"nothing to verify: {waiting:,} steps not sent yet; resume first"
            if waiting
            else "nothing to verify: no step of this ledger was done"
        )
        if options.unread:
            reason = f"nothing left unread in {report}"
        return VerifySummary(str(job.ledger), str(report), 0, {}, expected, reason)
    readings, requests, stopped = anyio.run(_read, job, (applied, acted), route)
    frame = pl.concat(
        [readings[a].frame(applied[a].get_column("user_id").to_list()) for a in applied]
    )
    if earlier is not None:  # the report stays whole: what was read before, and now the rest
        frame = earlier.update(frame, on=["user_id", "action"], include_nulls=True)
    write_report(frame, report)
    per_action = {
        a: readings[a].counts(applied[a].get_column("user_id").to_list()) for a in applied
    }
    return VerifySummary(
        str(job.ledger), str(report), requests, per_action, expected, None, stopped
    )


def _acted(reader: Ledger, action: str, steps: pl.DataFrame) -> dict[str, list[str]]:
    """Per user, the items a list-then-act step acted on (done, or in doubt)."""
    states = [ItemState.DONE, ItemState.UNKNOWN]
    return {
        uid: [i.item_id for i in reader.items_of(uid, action, states)]
        for uid in steps.get_column("user_id").to_list()
    }


async def _read(
    job: Job,
    work: tuple[dict[str, pl.DataFrame], dict[str, dict[str, list[str]]]],
    route: Route | None,
) -> tuple[dict[str, Reading], int, bool]:
    applied, acted = work
    async with Session(job, route) as session:
        client = await session.client()
        verifier = Verifier(client, caller := session.caller(control := session.control()))
        # filled as users are read: a stop that cancels the reads keeps what was read
        readings = {name: Reading(ACTIONS[name]) for name in applied}

        async def read(name: str) -> None:
            action, steps = ACTIONS[name], applied[name]
            if action.check.read is Read.LISTED:  # its list read again
                await relist(client, caller, acted[name], readings[name])
            elif action.check.read is Read.RISKY_USER:
                ids = steps.get_column("user_id").to_list()
                await verifier.risky_users(action, ids, readings[name])
            else:
                sent = dict(zip(steps["user_id"], steps["sent_at"], strict=True))
                await verifier.users(action, sent, readings[name])

        with job.stop.attached(control), control.scope():
            async with anyio.create_task_group() as group:
                for name in applied:
                    if applied[name].height:
                        group.start_soon(read, name)
        tripped = control.breaker.tripped
        if tripped is not None and not any(r.found for r in readings.values()):
            raise tripped
        return readings, control.tally.requests, control.ended


def _earlier(report: Path) -> pl.DataFrame:
    if not report.is_file():
        raise LedgerError(
            f"{report}: no earlier verify report to finish; run verify without --unread"
        )
    return read_report(report).select(list(VERIFY_COLUMNS))


def _unread_only(
    applied: dict[str, pl.DataFrame], earlier: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    unread = earlier.filter(pl.col("verify_status") == NOT_READ)
    return {
        a: frame.join(
            unread.filter(pl.col("action") == a).select("user_id"), on="user_id", how="semi"
        )
        for a, frame in applied.items()
    }
