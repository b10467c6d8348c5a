"""`batcher run`: read the inputs, resolve identities, plan each action, ask, send, report."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import polars as pl

from batcher.actions import ACTIONS, Action, Shape
from batcher.identities import GUEST, RESOLVED, estimate_requests
from batcher.inputs import InputSet, read_inputs
from batcher.job.execute import Facts, config_digest, execute, file_sha256, summarise
from batcher.job.ledgers import done_elsewhere, replanned, undone_later
from batcher.job.lookup import look_up, split_cached, to_look_up
from batcher.job.session import Route, Session, budget_specs
from batcher.job.setup import Job
from batcher.job.summary import Inputs, Summary
from batcher.ledger import LOOKUP_COLUMNS, Ledger, RunRecord
from batcher.plan import USER_COLUMNS, Plan, direct_users, make_plan
from batcher.report.files import sibling, write_rejects

# A share of invalid rows worth saying prominently, not only as a count in the table.
NOTABLE_INVALID = 0.05


@dataclass(frozen=True)
class RunOptions:
    inputs: tuple[Path, ...]
    column: str | None = None
    sheet: str | None = None
    dry_run: bool = False
    resend: bool = False  # send again what another recent run on the tenant already did


def run(job: Job, options: RunOptions, route: Route | None = None) -> Summary:
    """Read, resolve, plan, ask ``job.confirm``, record and send. A failed batch is data.
    ``route``: Graph through a transport instead of the network."""
    read = read_inputs(options.inputs, options.column, options.sheet)
    job.observer("inputs", files=read.files, warnings=read.warnings)
    if options.dry_run:
        return _dry_run(job, read, options)
    return anyio.run(_run, job, read, options, route)


async def _run(job: Job, read: InputSet, options: RunOptions, route: Route | None) -> Summary:
    assert job.ledger is not None
    record = RunRecord(
        "run",
        config_digest(job.settings),
        tuple((str(p), file_sha256(p)) for p in options.inputs),
        job.command_line,
    )
    existed = job.ledger.exists()
    ledger = Ledger.open(job.ledger, job.identity)
    try:
        ledger.recover()  # what a killed run left 'sending'
        ledger.reopen(undone_later(ledger).rows())  # what an undo reversed since: send again
        job.observer("ledger", path=str(ledger.path), exists=existed)
        async with Session(job, route) as session:
            users, lookups, requests = await _identify(session, ledger, read)
            facts = _facts(job, read, lookups, requests, len(users))
            elsewhere = None if options.resend else _elsewhere(job)
            plan = make_plan(
                users, ledger.known_steps(), _actions(job), job.settings.send.batch_size, elsewhere
            )
            facts = _with_elsewhere(job, facts, elsewhere, plan)
            return await execute(session, ledger, plan, facts, record)
    finally:
        ledger.close()


def _elsewhere(job: Job) -> pl.DataFrame:
    """What the tenant's other recent ledgers already did (this ledger's folder, and the
    configured one)."""
    assert job.ledger is not None
    settings = job.settings.ledger
    return done_elsewhere(job.ledger, job.identity, settings.recent_hours, settings.folder)


def _actions(job: Job) -> tuple[Action, ...]:
    return tuple(ACTIONS[name] for name in job.actions)


def _needs_lookup(job: Job, read: InputSet) -> pl.DataFrame:
    """The identities to look up: UPNs, e-mail addresses and SIDs; object IDs too when a
    directory action needs each user's type (guests) and existence."""
    per_user = any(ACTIONS[a].shape is Shape.PER_USER for a in job.actions)
    return to_look_up(read, object_ids=per_user)


async def _identify(
    session: Session, ledger: Ledger, read: InputSet
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """The users to act on (USER_COLUMNS, input order), every look-up outcome, and how many
    look-up requests it took. A resume takes outcomes from the ledger, not from Graph."""
    wanted = _needs_lookup(session.job, read)
    cached, todo = split_cached(wanted, ledger.lookups())
    requests = 0
    outcomes = cached
    if todo.height:
        found, requests = await look_up(session, todo, record=ledger.record_lookups, announce=True)
        outcomes = pl.concat([cached, found])
    users = _users(read, wanted, outcomes)
    return users, outcomes, requests


def _users(read: InputSet, wanted: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    """The users to act on, in input order: object IDs as they are (unless they were looked up
    too), then the users identities resolved to; a user reached by several values is one."""
    direct = read.ids
    if (wanted.get_column("kind") == "object_id").any():
        direct = direct.head(0)  # object IDs went through the look-up too
    found = outcomes.filter(pl.col("outcome").is_in([RESOLVED, GUEST]))
    users = direct_users(direct)
    if not found.height:
        return users
    return pl.concat([users, found.select(list(USER_COLUMNS))], how="vertical_relaxed").unique(
        "user_id", keep="first", maintain_order=True
    )


def _facts(
    job: Job,
    read: InputSet,
    lookups: pl.DataFrame,
    requests: int,
    users: int,
    *,
    dry_run: bool = False,
) -> Facts:
    inputs = Inputs.of(read, lookups, requests, users)
    rejects = _rejects(read, lookups, _actions(job))
    path = None
    if rejects.height and job.ledger is not None and not dry_run:  # a dry run writes nothing
        path = sibling(job.ledger, ".rejects.csv")
        write_rejects(rejects, path)
    return Facts("run", inputs, path, _notes(read, inputs, path), dry_run=dry_run)


def _rejects(read: InputSet, lookups: pl.DataFrame, actions: tuple[Action, ...]) -> pl.DataFrame:
    """Invalid rows, and identities that cannot be acted on, or not by every action (why)."""
    unusable = lookups.filter(pl.col("outcome") != RESOLVED) if lookups.height else lookups
    skipping = [a for a in actions if a.skips_guests]
    if not skipping:  # every action applies to guests: nothing to say about them
        unusable = unusable.filter(pl.col("outcome") != GUEST)
    guest = "guest (B2B)"
    if skipping:
        others = [a.name for a in actions if not a.skips_guests]
        guest = (
            f"guest (B2B): skipped for {', '.join(a.name for a in skipping)}: "
            f"{skipping[0].skips_guests}" + (f"; {', '.join(others)} applied" if others else "")
        )
    reason = (
        pl.when(pl.col("outcome") == GUEST)
        .then(pl.lit(guest))
        .otherwise(pl.col("outcome") + ": " + pl.col("reason").fill_null(""))
    )
    return pl.concat(
        [
            read.rejects.select("source_file", "source_row", "raw_value", "reason"),
            unusable.select(
                "source_file",
                "source_row",
                pl.col("input_value").alias("raw_value"),
                reason.alias("reason"),
            ),
        ],
        how="vertical_relaxed",
    )


def _notes(read: InputSet, inputs: Inputs, rejects: Path | None) -> tuple[str, ...]:
    notes = []
    # a dry run writes no file: the run lists them
    see = f"see {rejects}" if rejects else "the run lists them in its rejects file"
    if read.rows and read.invalid / read.rows >= NOTABLE_INVALID:
        notes.append(
            f"{read.invalid:,} of {read.rows:,} rows ({read.invalid / read.rows:.0%}) are not "
            f"valid user IDs, UPNs or SIDs and will not be acted on; {see}"
        )
    unusable = inputs.not_found + inputs.ambiguous
    if unusable:
        notes.append(
            f"{_identities(unusable)} could not be resolved ({inputs.not_found:,} not found, "
            f"{inputs.ambiguous:,} ambiguous) and will not be acted on; {see}"
        )
    if inputs.not_looked_up:
        notes.append(
            f"{_identities(inputs.not_looked_up)} could not be looked up: Graph did not answer "
            "in time; they are not acted on yet: run the same command to look them up again"
        )
    return tuple(notes)


def _identities(n: int) -> str:
    return f"{n:,} {'identity' if n == 1 else 'identities'}"


def _with_elsewhere(job: Job, facts: Facts, elsewhere: pl.DataFrame | None, plan: Plan) -> Facts:
    done = sum(p.done_elsewhere for p in plan.actions)
    if not done or elsewhere is None:
        return facts
    ledgers = sorted(set(elsewhere.get_column("ledger").to_list()))
    shown = ", ".join(ledgers[:2]) + (f" and {len(ledgers) - 2} more" if len(ledgers) > 2 else "")
    hours = f"{job.settings.ledger.recent_hours:g}"
    note = (
        f"{done:,} steps were already done in the last {hours} hours by another run on this "
        f"tenant ({shown}); they are not sent again (--resend sends them)"
    )
    return replace(facts, notes=(*facts.notes, note))


def _dry_run(job: Job, read: InputSet, options: RunOptions) -> Summary:
    """The plan without a single request, and without creating or changing anything."""
    exists = job.ledger is not None and job.ledger.exists()
    known = pl.DataFrame(schema={"user_id": pl.String, "action": pl.String, "state": pl.String})
    cached = pl.DataFrame(schema=LOOKUP_COLUMNS)
    if exists:
        assert job.ledger is not None
        reader = Ledger.open_existing(job.ledger, job.identity)
        try:
            known, cached = replanned(reader.known_steps(), undone_later(reader)), reader.lookups()
        finally:
            reader.close()
    wanted = _needs_lookup(job, read)
    cached, todo = split_cached(wanted, cached)
    # object IDs count as users before their look-up (it checks they exist and who is a guest)
    users = _users(read, wanted.filter(pl.col("kind") != "object_id"), cached)
    estimate = estimate_requests(dict(todo.group_by("kind").len().iter_rows()))
    elsewhere = None if options.resend or job.ledger is None else _elsewhere(job)
    plan = make_plan(users, known, _actions(job), job.settings.send.batch_size, elsewhere)
    facts = _facts(job, read, cached, estimate, users.height, dry_run=True)
    facts = replace(facts, ledger_exists=exists)
    if todo.height:
        directory = job.settings.directory
        note = (
            f"{_identities(todo.height)} need{'s' * (todo.height == 1)} a directory look-up "
            "before the plan is exact: "
            f"about {estimate:,} request{'s' * (estimate != 1)} (JSON batches of 20 x 15 "
            f"values) within {directory.read_units_per_window:,} resource units per "
            f"{directory.read_window_seconds:g} s; the run does them before it asks you to go on"
        )
        facts = replace(facts, notes=(*facts.notes, note))
    specs = budget_specs(job.settings)
    return summarise(job, plan, _with_elsewhere(job, facts, elsewhere, plan), specs)
