"""`batcher run`: read the inputs, resolve identities, plan each action, ask, send, report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
import polars as pl

from batcher.actions import ACTIONS, Action, Shape
from batcher.errors import ConfigError, InputError
from batcher.eventlog import Event
from batcher.inputs import InputSet, read_inputs
from batcher.job.execute import Facts, config_digest, execute, file_sha256, summarise
from batcher.job.guards import names_of, offline_guards, read_guards, with_guards
from batcher.job.ledgers import (
    again_after,
    by_ledger,
    plan_again,
    steps_done_elsewhere,
    steps_undone_since,
)
from batcher.job.lookup import look_up, split_cached, to_look_up
from batcher.job.session import Route, Session, budget_specs, signed_in
from batcher.job.setup import Job
from batcher.job.sources import Plan as SourcePlan
from batcher.job.sources import SourceOptions, check_sources, merged, no_files, read_sources
from batcher.job.summary import Inputs, Summary
from batcher.ledger import LOOKUP_COLUMNS, Ledger, RunRecord
from batcher.passwords import check_sheet_path
from batcher.plan import USER_COLUMNS, USER_PROPERTIES, Plan, direct_users, guard, make_plan
from batcher.report.files import sibling, write_rejects
from batcher.window import Window, parse_since, recorded_window, settle_window
from batcher.workers.mailrules import (
    META_ALL_RULES,
    all_rules_line,
    picks_rules,
    settle_all_rules,
)
from batcher.workers.resolver import GUEST, RESOLVED, estimate_requests

# A share of invalid rows worth saying prominently, not only as a count in the table.
NOTABLE_INVALID = 0.05


@dataclass(frozen=True)
class RunOptions:
    inputs: tuple[Path, ...]
    column: str | None = None
    sheet: str | None = None
    dry_run: bool = False
    resend: bool = False  # send again what another recent run on the tenant already did
    since: str | None = None  # --since as typed: the start of the incident window
    passwords_out: Path | None = None  # the help desk's owner-only CSV of the passwords set
    sources: SourceOptions = field(default_factory=SourceOptions)  # read from Graph, beside files
    include_admins: bool = False  # act on holders of privileged roles too
    all_rules: bool = False  # disable-mail-rules: every rule but the system ones


def run(job: Job, options: RunOptions, route: Route | None = None) -> Summary:
    """Read, resolve, plan, ask ``job.confirm``, record and send. A failed batch is data.
    ``route``: Graph through a transport instead of the network."""
    _check_passwords_out(job, options.passwords_out)
    if options.all_rules and not picks_rules(_actions(job)):
        raise ConfigError(
            f"--all-rules is for {', '.join(picks_rules(ACTIONS.values()))}, which this run "
            "does not do; leave it out, or add the action"
        )
    since = parse_since(options.since, datetime.now(UTC)) if options.since else None
    sources = None
    if options.sources.given():  # checked before any file is read or request made
        sources = check_sources(options.sources, options.since, datetime.now(UTC))
        since = sources.since or since  # one window for the sign-ins and the run
    elif not options.inputs:
        raise InputError(
            "no input given; pass one or more files (batcher run FILE) or a source: "
            "--incident ID, --risky LEVEL or --signed-in-from ADDR --since 7d"
        )
    read = (
        read_inputs(options.inputs, options.column, options.sheet) if options.inputs else no_files()
    )
    job.observer(Event.INPUTS, files=read.files, warnings=read.warnings)
    if options.dry_run:
        return _dry_run(job, read, options, since)
    # the ledger is named by the tenant (and the files and sources, as build_job names it)
    job = signed_in(job, options.inputs, route, options.sources.names())
    return anyio.run(_run, job, read, (options, sources), route, since)


def _check_passwords_out(job: Job, path: Path | None) -> None:
    """--passwords-out only with an action that sets a secret, into a folder that exists."""
    if path is None:
        return
    if not any(a.secret_body for a in _actions(job)):
        setting = [a.name for a in ACTIONS.values() if a.secret_body]
        raise ConfigError(
            f"--passwords-out is for {', '.join(setting)}, which this run does not do; leave "
            "it out, or add the action"
        )
    check_sheet_path(path)


def _with_run_facts(
    facts: Facts, plan: Plan, window: Window | None, passwords_out: Path | None
) -> Facts:
    """The plan's and the gate's lines: the incident window, who is skipped (and why, besides
    guests), and where passwords are written."""
    notes = [window.line()] if window is not None else []
    for item in plan.actions:
        for skip in item.action.skips:
            n = sum(s.user_ids.len() for s in item.skipped_by if s.reason == skip.reason)
            if n:
                users = f"{n:,} user{'s' * (n != 1)}"
                notes.append(f"{users} {skip.who}: {item.action.name} skipped: {skip.reason}")
    if passwords_out is not None:
        notes.append(
            f"--passwords-out {passwords_out}: each new password is written there in clear "
            "(owner-only file); hand it to the help desk over a safe channel and delete it "
            "once the users have theirs"
        )
    return replace(facts, notes=(*facts.notes, *notes), window=window, passwords_out=passwords_out)


def _with_all_rules(job: Job, facts: Facts, given: bool, meta: Mapping[str, str]) -> Facts:
    """--all-rules, when the run picks inbox rules: as the ledger's first run recorded it (a
    different choice is refused), and its line in the plan and at the gate."""
    picking = [a.lists.picks for a in _actions(job) if a.lists and a.lists.picks]
    if not picking:
        return facts
    chosen = settle_all_rules(given, meta)
    notes = (all_rules_line(picking[0], META_ALL_RULES in meta),) if chosen else ()
    return replace(facts, notes=(*facts.notes, *notes), all_rules=chosen)


async def _run(
    job: Job,
    read: InputSet,
    given: tuple[RunOptions, SourcePlan | None],
    route: Route | None,
    since: Window | None,
) -> Summary:
    options, sources = given
    assert job.ledger is not None
    record = RunRecord(
        "run",
        config_digest(job.settings),
        tuple((str(p), file_sha256(p)) for p in options.inputs),
        job.command_line,
    )
    existed = job.ledger.exists()
    ledger = Ledger.open(job.ledger, job.scope)
    try:
        ledger.recover()  # what a killed run left 'sending'
        ledger.reopen(steps_undone_since(ledger).rows())  # what an undo reversed since: send again
        ledger.reopen(again_after(ledger.known_steps()).rows())  # revoke after a new disable
        job.observer(Event.LEDGER, path=str(ledger.path), exists=existed)
        async with Session(job, route) as session:
            said: list[str] = []
            if sources is not None:
                rows, said = await read_sources(session, ledger, sources)
                read = merged(read, rows)
            users, lookups, requests, cached = await _identify(session, ledger, read)
            facts = _from_ledger(_facts(job, read, lookups, requests, len(users)), cached)
            facts = replace(facts, notes=(*said, *facts.notes))
            guarding = await read_guards(session, users, _actions(job), options.include_admins)
            elsewhere = None if options.resend else _elsewhere(job)
            plan = make_plan(
                users, ledger.known_steps(), _actions(job), job.settings.send.batch_size, elsewhere
            )
            plan = guard(plan, guarding.verdicts)
            facts = with_guards(facts, plan, guarding, names_of(users, lookups))
            facts = _with_elsewhere(job, facts, elsewhere, plan, users)
            window = settle_window(since, recorded_window(ledger.meta()))
            facts = _with_run_facts(facts, plan, window, options.passwords_out)
            facts = _with_all_rules(job, facts, options.all_rules, ledger.meta())
            return await execute(session, ledger, plan, facts, record)
    finally:
        ledger.close()


def _elsewhere(job: Job) -> pl.DataFrame:
    """What the tenant's other recent ledgers already did (this ledger's folder, and the
    configured one)."""
    assert job.ledger is not None
    settings = job.settings.ledger
    return steps_done_elsewhere(job.ledger, job.scope, settings.recent_hours, settings.folder)


def _actions(job: Job) -> tuple[Action, ...]:
    return tuple(ACTIONS[name] for name in job.actions)


def _needs_lookup(job: Job, read: InputSet) -> pl.DataFrame:
    """The identities to look up: UPNs, e-mail addresses and SIDs; object IDs too when a
    directory action needs each user's type (guests) and existence."""
    per_user = any(ACTIONS[a].shape is Shape.PER_USER for a in job.actions)
    return to_look_up(read, object_ids=per_user)


async def _identify(
    session: Session, ledger: Ledger, read: InputSet
) -> tuple[pl.DataFrame, pl.DataFrame, int, int]:
    """The users to act on (USER_COLUMNS, input order), every look-up outcome, how many
    look-up requests it took, and how many outcomes came from the ledger. A resume takes
    outcomes from the ledger, not from Graph."""
    wanted = _needs_lookup(session.job, read)
    cached, todo = split_cached(wanted, ledger.lookups())
    requests = 0
    outcomes = cached
    if todo.height:
        found, requests = await look_up(session, todo, record=ledger.record_lookups, announce=True)
        outcomes = pl.concat([cached, found])
    users = _users(read, wanted, outcomes)
    return users, outcomes, requests, cached.height


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
    looked_up = found.select(*USER_COLUMNS, *USER_PROPERTIES)
    return pl.concat([users, looked_up], how="diagonal_relaxed").unique(
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


def _from_ledger(facts: Facts, cached: int) -> Facts:
    """Say which look-up outcomes came from the ledger (an earlier run's look-up), not Graph."""
    if not cached:
        return facts
    inputs = replace(facts.inputs, from_ledger=cached)
    note = (
        f"{_identities(cached)} of those looked up in the directory were looked up by an earlier "
        "run of this ledger: their outcomes come from the ledger, without a look-up request"
    )
    return replace(facts, inputs=inputs, notes=(*facts.notes, note))


def _identities(n: int) -> str:
    return f"{n:,} {'identity' if n == 1 else 'identities'}"


def _with_elsewhere(
    job: Job, facts: Facts, elsewhere: pl.DataFrame | None, plan: Plan, users: pl.DataFrame
) -> Facts:
    done = sum(p.done_elsewhere for p in plan.actions)
    if not done or elsewhere is None:
        return facts
    ledgers = by_ledger(elsewhere, users)
    shown = ", ".join(ledgers[:2]) + (f" and {len(ledgers) - 2} more" if len(ledgers) > 2 else "")
    hours = f"{job.settings.ledger.recent_hours:g}"
    note = (
        f"{done:,} steps were already done in the last {hours} hours by another run on this "
        f"tenant ({shown}); they are not sent again (--resend sends them)"
    )
    return replace(facts, notes=(*facts.notes, note))


def _dry_run(job: Job, read: InputSet, options: RunOptions, since: Window | None) -> Summary:
    """The plan without a single request, and without creating or changing anything."""
    exists = job.ledger is not None and job.ledger.exists()
    known = pl.DataFrame(schema={"user_id": pl.String, "action": pl.String, "state": pl.String})
    cached = pl.DataFrame(schema=LOOKUP_COLUMNS)
    recorded = None
    snapshot = {}
    meta: dict[str, str] = {}
    if exists:
        assert job.ledger is not None
        reader = Ledger.open_existing(job.ledger, job.scope)
        try:
            rows = reader.source_rows()
            snapshot = {n: rows.filter(pl.col("source") == n) for n in reader.sources_read()}
            known = plan_again(reader.known_steps(), steps_undone_since(reader))
            cached = reader.lookups()
            known = plan_again(known, again_after(known))
            meta = dict(reader.meta())
            recorded = recorded_window(meta)
        finally:
            reader.close()
    window = settle_window(since, recorded)
    names = options.sources.names()
    if names:
        kept = [snapshot[n] for n in names if n in snapshot]
        read = merged(read, pl.concat(kept)) if kept else read
    wanted = _needs_lookup(job, read)
    cached, todo = split_cached(wanted, cached)
    # object IDs count as users before their look-up (it checks they exist and who is a guest)
    users = _users(read, wanted.filter(pl.col("kind") != "object_id"), cached)
    estimate = estimate_requests(dict(todo.group_by("kind").len().iter_rows()))
    elsewhere = None if options.resend or job.ledger is None else _elsewhere(job)
    plan = make_plan(users, known, _actions(job), job.settings.send.batch_size, elsewhere)
    guarding = offline_guards(job.settings.safety.protected, users)
    plan = guard(plan, guarding.verdicts)
    facts = _facts(job, read, cached, estimate, users.height, dry_run=True)
    facts = with_guards(facts, plan, guarding, names_of(users, cached), dry_run=True)
    facts = replace(_from_ledger(facts, cached.height), ledger_exists=exists)
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
    facts = _with_run_facts(facts, plan, window, options.passwords_out)
    facts = _with_all_rules(job, facts, options.all_rules, meta)
    unread = [n for n in names if n not in snapshot]
    if unread:
        note = f"{', '.join(unread)}: read from Graph when the run starts (a dry run sends nothing)"
        facts = replace(facts, notes=(note, *facts.notes))
    return summarise(job, plan, _with_elsewhere(job, facts, elsewhere, plan, users), specs)
