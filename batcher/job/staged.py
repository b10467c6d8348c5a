"""`batcher plan` and `batcher apply`: everything up to the gate into a file, then exactly that."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import polars as pl

from batcher.actions import Verdict
from batcher.errors import ConfigError
from batcher.eventlog import Event
from batcher.inputs import read_inputs
from batcher.job import planfile
from batcher.job.execute import Facts, config_digest, execute, summarise
from batcher.job.guards import guard_plan, names_of, read_guards, with_guards
from batcher.job.ledgers import again_after, steps_undone_since
from batcher.job.lookup import look_up
from batcher.job.run import (
    RunOptions,
    _actions,
    _elsewhere,
    _facts,
    _needs_lookup,
    _users,
    _with_elsewhere,
    _with_run_facts,
)
from batcher.job.session import Route, Session
from batcher.job.setup import Job
from batcher.job.summary import Inputs, Summary
from batcher.ledger import LOOKUP_COLUMNS, Ledger, RunRecord
from batcher.plan import Plan, guard, make_plan
from batcher.report.files import sibling

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def ledger_of(plan_path: Path) -> Path:
    """The ledger `apply` keeps beside its plan: plan.json -> plan.sqlite (apply again: resume)."""
    return sibling(plan_path.absolute(), ".sqlite")


@dataclass(frozen=True)
class Planned:
    """What `batcher plan` wrote: the summary (as a dry run shows it) and the file."""

    summary: Summary
    out: Path
    content: dict[str, Any]


def plan(
    job: Job, options: RunOptions, out: Path, now: Clock = utc_now, route: Route | None = None
) -> Planned:
    """Read, look up, check recent runs, and write the exact plan at ``out``; no write is sent.
    ``job.ledger``: the ledger apply will keep (the recent-runs check leaves it out)."""
    read = read_inputs(options.inputs, options.column, options.sheet)
    job.observer(Event.INPUTS, files=read.files, warnings=read.warnings)
    summary, made = anyio.run(_plan, job, read, options, route)
    content = planfile.build(made, now())
    planfile.write(content, out)
    return Planned(summary, out, content)


async def _plan(
    job: Job, read: Any, options: RunOptions, route: Route | None
) -> tuple[Summary, planfile.Made]:
    async with Session(job, route) as session:
        wanted = _needs_lookup(job, read)
        found, requests = pl.DataFrame(schema=LOOKUP_COLUMNS), 0
        if wanted.height:
            found, requests = await look_up(session, wanted, announce=True)
        users = _users(read, wanted, found)
        if not job.scope.tenant:
            raise ConfigError("the tenant is not known; set [auth] tenant_id")
        elsewhere = None if options.resend else _elsewhere(job)
        known = pl.DataFrame(schema={"user_id": pl.String, "action": pl.String, "state": pl.String})
        actions = _actions(job)
        made = make_plan(users, known, actions, job.settings.send.batch_size, elsewhere)
        guarding = await read_guards(session, users, actions, options.include_admins)
        made = guard(made, guarding.verdicts)
        facts = _facts(job, read, found, requests, users.height, dry_run=True)
        facts = with_guards(replace(facts, command="plan"), made, guarding, names_of(users, found))
        facts = _with_elsewhere(job, facts, elsewhere, made, users)
        facts = _with_run_facts(facts, made, None, None)
        summary = summarise(job, made, facts, session.specs)
    digest = config_digest(job.settings)
    decisions = guarding.verdicts.with_columns(
        pl.col("roles").str.split("; ").fill_null(pl.lit([], pl.List(pl.String)))
    )
    return summary, planfile.Made(
        job.scope, made, made.new_users, found, digest, decisions, options.include_admins
    )


def check(loaded: planfile.Loaded, job: Job, max_age_hours: float, now: datetime) -> None:
    """Refuse, before any request, a plan for another tenant or cloud, or too old."""
    content = loaded.content
    if loaded.tenant != job.scope.tenant or content.get("cloud") != job.scope.cloud:
        raise ConfigError(
            f"{loaded.path}: the plan is for tenant {loaded.tenant} ({content.get('cloud')} "
            f"cloud), but the config signs in to {job.scope.tenant or 'an unknown tenant'} "
            f"({job.scope.cloud} cloud); nothing was sent; use that tenant's config"
        )
    hours = loaded.age(now).total_seconds() / 3600
    if hours > max_age_hours:
        raise ConfigError(
            f"{loaded.path}: the plan was made {hours:.1f} hours ago, more than [safety] "
            f"plan_max_age_hours = {max_age_hours:g}; nothing was sent; make a new plan with "
            "`batcher plan` (the directory may have changed since)"
        )


def origin(loaded: planfile.Loaded, now: datetime) -> str:
    """The gate's line: whose plan, how old, its digest."""
    minutes = int(loaded.age(now).total_seconds() // 60)
    age = f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
    return (
        f"plan {loaded.path} by {loaded.content['author']}, made {age} ago "
        f"({loaded.content['created_at']}), digest {loaded.digest[:16]}"
    )


def apply(
    job: Job, loaded: planfile.Loaded, now: Clock = utc_now, route: Route | None = None
) -> Summary:
    """Act on exactly the plan's users (verdict "act"), nothing read from the inputs; the
    ledger records it like a run, and the same apply again resumes it."""
    moment = now()
    check(loaded, job, job.settings.safety.plan_max_age_hours, moment)
    return anyio.run(_apply, job, loaded, origin(loaded, moment), route)


async def _apply(job: Job, loaded: planfile.Loaded, said: str, route: Route | None) -> Summary:
    assert job.ledger is not None
    record = RunRecord(
        "apply", config_digest(job.settings), ((str(loaded.path), loaded.digest),), job.command_line
    )
    existed = job.ledger.exists()
    ledger = Ledger.open(job.ledger, job.scope)
    try:
        ledger.recover()  # what a killed apply left 'sending'
        ledger.reopen(steps_undone_since(ledger).rows())
        ledger.reopen(again_after(ledger.known_steps()).rows())
        job.observer(Event.LEDGER, path=str(ledger.path), exists=existed)
        if not existed:
            ledger.record_lookups(loaded.lookups())  # UPNs for the gate and the report
        users = loaded.users()
        made = make_plan(
            users,
            ledger.known_steps(),
            _actions(job),
            job.settings.send.batch_size,
            loaded.done_elsewhere(),
        )
        made = _as_planned(loaded, made)
        _check_within(loaded, made)
        kept = len(loaded.records()) - len(loaded.records(planfile.ACT))
        notes = [said]
        if kept:
            notes.append(
                f"{kept:,} users of the plan are protected or held back: not acted on (held "
                "back: no action that touches access)"
            )
        if loaded.content["config_digest"] != config_digest(job.settings):
            notes.append("the config differs from the one the plan was made with")
        facts = Facts("apply", Inputs(users=users.height), notes=tuple(notes))
        async with Session(job, route) as session:
            # the guards again, as they are now: a user protected since the plan gets nothing
            made, facts = await guard_plan(
                session, made, facts, loaded.lookups(), loaded.include_admins
            )
            return await execute(session, ledger, made, facts, record)
    finally:
        ledger.close()


def _as_planned(loaded: planfile.Loaded, made: Plan) -> Plan:
    """``made`` less every step the plan does not say to send (a held-back administrator's
    disable, say): apply does no more than the plan, whatever the guards read now."""
    items = []
    for item in made.actions:
        planned = [
            u["user_id"]
            for u in loaded.records()
            if u["steps"].get(item.action.name) == planfile.SEND
        ]
        items.append(replace(item, to_send=item.to_send.filter(item.to_send.is_in(planned))))
    return replace(made, actions=tuple(items))


def _check_within(loaded: planfile.Loaded, made: Any) -> None:
    """Every step apply sends is one the plan says to send (a guard against a bug)."""
    for item in made.actions:
        planned = {
            u["user_id"]
            for u in loaded.records()
            if u["verdict"] != Verdict.PROTECTED
            and u["steps"].get(item.action.name) == planfile.SEND
        }
        extra = set(item.to_send.to_list()) - planned
        if extra:
            raise RuntimeError(f"apply would send {item.action.name} to users the plan skips")
