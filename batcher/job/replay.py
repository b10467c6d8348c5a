"""`batcher replay`: send again a ledger's failed and unknown steps, as new attempts in it."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import polars as pl

from batcher.actions import ACTIONS
from batcher.errors import LedgerError
from batcher.job.execute import Facts, config_digest, execute
from batcher.job.guards import guard_plan
from batcher.job.session import Route, Session, signed_in
from batcher.job.setup import Job
from batcher.job.summary import Inputs, Summary
from batcher.ledger import REPLAYABLE, Ledger, RunRecord, StepState
from batcher.plan import USER_COLUMNS, ActionPlan, Plan


@dataclass(frozen=True)
class ReplayOptions:
    only_code: str | None = None  # only steps whose last Graph error code is this
    action: str | None = None  # only this action's steps
    include_admins: bool = False  # send access-touching steps to privileged role holders too


def replay(job: Job, options: ReplayOptions, route: Route | None = None) -> Summary:
    return anyio.run(_replay, signed_in(job, route=route), options, route)


async def _replay(job: Job, options: ReplayOptions, route: Route | None) -> Summary:
    assert job.ledger is not None
    ledger = Ledger.open(job.ledger, job.scope)
    try:
        ledger.recover()
        plan, facts = _plan(job, ledger, options)
        record = RunRecord("replay", config_digest(job.settings), command_line=job.command_line)
        async with Session(job, route) as session:
            plan, facts = await guard_plan(
                session, plan, facts, ledger.lookups(), options.include_admins
            )
            return await execute(session, ledger, plan, facts, record)
    finally:
        ledger.close()


def _plan(job: Job, ledger: Ledger, options: ReplayOptions) -> tuple[Plan, Facts]:
    actions = ledger.actions()
    if options.action is not None and options.action not in actions:
        raise LedgerError(
            f"{ledger.path}: records the actions {', '.join(actions)}, not "
            f"{options.action!r}; pass one of those to --action"
        )
    selected = ledger.replayable(options.action, options.only_code)
    if options.only_code is not None and selected.height == 0:
        codes = ", ".join(f"{c} ({n})" for c, n in ledger.error_codes().items()) or "none"
        raise LedgerError(
            f"{ledger.path}: no failed or unknown step has error code {options.only_code!r}; "
            f"codes in this ledger: {codes}"
        )
    counts = ledger.counts()  # after recover() no step is left 'sending': as replayable() sees it
    plans = []
    for name in actions:
        chosen = selected.filter(pl.col("action") == name).get_column("user_id")
        candidates = sum(counts[name][state] for state in REPLAYABLE)
        plans.append(
            ActionPlan(
                ACTIONS[name],
                to_send=chosen,
                skipped=pl.Series("user_id", [], pl.String),
                already_done=counts[name][StepState.DONE],
                done_elsewhere=0,
                failed_before=0,
                batch_size=job.settings.send.batch_size,
                not_selected=candidates - chosen.len(),
            )
        )
    notes = []
    never = sum(c[StepState.PLANNED] for c in counts.values())
    if never:
        notes.append(
            f"{never:,} steps in this ledger were never sent (or Graph answered they were not "
            "applied); run the original `batcher run` command to send them"
        )
    facts = Facts("replay", Inputs(users=ledger.users()), notes=tuple(notes), report_keys=True)
    return Plan(pl.DataFrame(schema=USER_COLUMNS), tuple(plans)), facts
