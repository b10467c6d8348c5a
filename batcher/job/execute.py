"""The part run, replay and undo share: the gate, then record, send, report and summarise."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from batcher.actions import Budget, Read
from batcher.config import Settings
from batcher.errors import NotConfirmed, Unreachable
from batcher.eventlog import Event
from batcher.job.radius import for_the_gate
from batcher.job.session import Session
from batcher.job.setup import Job
from batcher.job.summary import ActionSummary, GuardedUser, Inputs, Summary
from batcher.ledger import Ledger, RunRecord, StepState
from batcher.pacer import BudgetSpec
from batcher.passwords import PasswordSheet, Secret
from batcher.plan import Plan
from batcher.platform import command_line
from batcher.report.files import sibling, step_report, write_report
from batcher.window import Window
from batcher.workers.mailrules import META_ALL_RULES
from batcher.workers.send import LaneContext, SendOutcome, Work, send


@dataclass(frozen=True)
class Facts:
    """What a summary says besides the plan: the command, its inputs, files and notes."""

    command: str
    inputs: Inputs = field(default_factory=Inputs)
    rejects: Path | None = None
    notes: tuple[str, ...] = ()
    dry_run: bool = False
    ledger_exists: bool = True
    report_keys: bool = False  # the per-run report lists only the steps sent (a replay)
    passwords_out: Path | None = None  # the help desk's owner-only CSV of passwords set
    window: Window | None = None  # --since: recorded in the ledger once the run begins
    all_rules: bool | None = None  # --all-rules, when the run picks inbox rules: recorded too
    guarded: tuple[GuardedUser, ...] = ()  # protected and held-back users (the guards)


def summarise(
    job: Job,
    plan: Plan,
    facts: Facts,
    specs: Mapping[Budget, BudgetSpec],
    outcome: SendOutcome | None = None,
) -> Summary:
    ends = plan.seconds_by_action(specs)
    actions = tuple(
        ActionSummary(
            name=p.action.name,
            does=p.action.does,
            undo=p.action.undo,
            budget=p.action.budget,
            # a user found not to apply once listed (no mailbox) is skipped, not to send
            to_send=p.to_send.len() - _skipped_now(outcome, p.action.name),
            requests=p.requests,
            already_done=p.already_done,
            done_elsewhere=p.done_elsewhere,
            failed_before=p.failed_before,
            not_selected=p.not_selected,
            skipped=p.skipped.len() + _skipped_now(outcome, p.action.name),
            done=outcome.of(p.action.name, StepState.DONE) if outcome else 0,
            failed=outcome.of(p.action.name, StepState.FAILED) if outcome else 0,
            unknown=outcome.of(p.action.name, StepState.UNKNOWN) if outcome else 0,
            estimated_seconds=ends.get(p.action.name, 0.0),
            guarded=p.guarded,
        )
        for p in plan.actions
    )
    stopped = outcome.stopped_by if outcome else None
    return Summary(
        command=facts.command,
        target=job.settings.graph.target,
        tenant=job.scope.tenant or "(known once signed in)",
        cloud=job.scope.cloud,
        api_version=job.scope.api_version,
        dry_run=facts.dry_run,
        inputs=facts.inputs,
        actions=actions,
        estimated_seconds=plan.seconds_at(specs),
        users_to_act=plan.users_to_act,
        users_in_reach=plan.users_in_reach,
        requests=outcome.requests if outcome else 0,
        throttled=outcome.throttled if outcome else 0,
        seconds=outcome.seconds if outcome else 0.0,
        ledger=str(job.ledger) if job.ledger else None,
        ledger_exists=facts.ledger_exists,
        rejects=str(facts.rejects) if facts.rejects else None,
        stopped=str(stopped) if stopped else None,
        unreachable=isinstance(stopped, Unreachable),
        interrupted=bool(outcome and outcome.interrupted),
        notes=facts.notes,
        guarded=facts.guarded,
    )


async def execute(
    session: Session, ledger: Ledger, plan: Plan, facts: Facts, record: RunRecord
) -> Summary:
    """The gate, then record and send. Until the operator agrees, the ledger holds no run, no
    new step and no attempt (it may hold look-ups, which change nothing in the tenant)."""
    job = session.job
    preview = summarise(job, plan, facts, session.specs)
    if plan.to_send:  # the users it names, and the primary domain it may ask for
        preview = await for_the_gate(session, ledger, plan, preview)
    if plan.to_send and not job.confirm(preview):
        job.observer(Event.DECLINED, command=facts.command, to_send=plan.to_send)
        raise NotConfirmed("not confirmed: nothing was sent; run the same command to start again")
    # Sign in (and check the tenant) before recording anything: a refused sign-in leaves the
    # ledger with no run and no new step, as if the command had not been given.
    client = await session.client() if plan.to_send else None
    run_id = ledger.begin_run(record)
    job.observer(Event.RUN_STARTED, run=run_id, ledger=str(ledger.path), **_counts(preview))
    if facts.window is not None:
        facts.window.record(ledger.set_meta)
    if facts.all_rules is not None:
        ledger.set_meta(META_ALL_RULES, "yes" if facts.all_rules else "no")
    ledger.add_users(plan.new_users)
    if plan.guarded is not None:
        ledger.record_guarded(plan.guarded)
    for item in plan.actions:
        ledger.add_steps(item.action.name, item.to_send)
        for skipped in item.skipped_by:
            ledger.skip_steps(item.action.name, skipped.user_ids, skipped.reason)
    outcome = None
    if client is not None:
        control = session.control()
        sheet = PasswordSheet(facts.passwords_out) if facts.passwords_out else None
        lanes = LaneContext(
            ledger,
            client,
            session.caller(control),
            job.settings.send.max_in_flight,
            keep_secret=_sheet_writer(sheet, ledger) if sheet else None,
            control=control,
        )
        works = _with_reads_before(
            ledger, [Work(p.action, p.to_send.to_list()) for p in plan.actions]
        )
        job.observer(
            Event.SENDING,
            total=plan.to_send,
            actions={w.action.name: len(w.user_ids) for w in works},
        )
        try:
            outcome = await send(lanes, works, job.settings.send.batch_size, job.stop)
        finally:
            if sheet is not None:
                sheet.close()
            job.observer(Event.SENT)
    result = summarise(job, plan, facts, session.specs, outcome)
    # The end of the run first: a report that cannot be written must not leave it unfinished.
    ledger.end_run(_counts(result))
    report = sibling(ledger.path, ".replay.report.csv" if facts.report_keys else ".report.csv")
    keys = _sent_keys(plan) if facts.report_keys else None
    try:
        write_report(step_report(ledger.report(keys), ledger.guarded(), ledger.item_rows()), report)
    except (OSError, pl.exceptions.PolarsError) as exc:
        job.observer(Event.REPORT_NOT_WRITTEN, path=str(report), reason=_reason(exc))
        result = replace(result, notes=(*result.notes, _not_written(report, ledger.path, exc)))
    else:
        result = replace(result, report=str(report))
    job.observer(Event.RUN_FINISHED, run=run_id, **_counts(result))
    return result


def _with_reads_before(ledger: Ledger, works: list[Work]) -> list[Work]:
    """Each work whose action undo reverses and whose state Identity Protection shows (confirm)
    reads its users' state first, so that an undo leaves those already so before the run as
    they were. Not those whose step is in doubt: this ledger may have applied it itself."""
    kept = []
    for work in works:
        check = work.action.check
        if work.action.undo is None or check.read is not Read.RISKY_USER or not work.user_ids:
            kept.append(work)
            continue
        doubt = set(ledger.in_doubt(work.action.name))
        kept.append(replace(work, read_before=[u for u in work.user_ids if u not in doubt]))
    return kept


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _not_written(report: Path, ledger: Path, exc: BaseException) -> str:
    """One line: why the report was not written, and the command that writes it again."""
    again = command_line(["batcher", "report", str(ledger), "--out", str(report)])
    return f"the report {report} was not written ({_reason(exc)}); write it with: {again}"


def _sheet_writer(
    sheet: PasswordSheet, ledger: Ledger
) -> Callable[[str, str, StepState, Secret], None]:
    """Write each password a request set (or may have set) to the help desk's sheet, with the
    user's UPN as the look-up read it."""
    lookups = ledger.lookups().drop_nulls("user_id")
    upns = dict(lookups.select("user_id", "user_principal_name").iter_rows())

    def write(user_id: str, action: str, state: StepState, secret: Secret) -> None:
        sheet.write(user_id, upns.get(user_id), action, state.value, secret)

    return write


def _sent_keys(plan: Plan) -> Iterable[tuple[str, str]]:
    return [(uid, p.action.name) for p in plan.actions for uid in p.to_send]


def _counts(summary: Summary) -> dict[str, object]:
    record: dict[str, object] = {
        key: value
        for key, value in summary.to_json().items()
        if isinstance(value, int | str | dict) and key not in ("tenant", "ledger", "report")
    }
    record["stopped"] = summary.stopped
    return record


def config_digest(settings: Settings) -> str:
    """A fingerprint of the effective settings, without anything secret-looking."""

    def scrub(value: object) -> object:
        if isinstance(value, dict):
            return {
                k: scrub(v)
                for k, v in value.items()
                if not any(word in k for word in ("secret", "password", "token"))
            }
        return value

    data = scrub(settings.model_dump(mode="json"))
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _skipped_now(outcome: SendOutcome | None, action: str) -> int:
    return outcome.of(action, StepState.SKIPPED) if outcome else 0
