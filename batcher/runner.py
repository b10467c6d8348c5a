"""Run a job end to end: inputs -> plan -> ledger -> send -> summary, for `run` and `replay`."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import polars as pl
from rich.console import Console

from batcher.auth import StaticToken, TokenSource, tenant_of, token_source
from batcher.clouds import ACTION_CONFIRM, ACTION_DISMISS, CLOUDS
from batcher.config import Settings
from batcher.errors import AuthError, ConfigError, LedgerError, NotConfirmed
from batcher.eventlog import EventSink, no_events
from batcher.inputs import FileSummary, InputSet, read_inputs
from batcher.ledger import Ledger, RunIdentity, RunRecord, WriterLock
from batcher.pacer import Pacer
from batcher.plan import Plan, make_plan
from batcher.report import Summary, say, write_rejects, write_report
from batcher.sender import Sender, SendOutcome

if TYPE_CHECKING:  # the HTTP stack and the simulator load only when a run sends
    from batcher.graph import GraphClient
from batcher.verify import (
    CONFIRMED,
    EXPECTED_STATE,
    NOT_CONFIRMED,
    PROCESSING,
    Verification,
    Verifier,
)


@dataclass(frozen=True)
class JobOptions:
    inputs: tuple[Path, ...]
    column: str | None = None
    ledger: Path | None = None
    dry_run: bool = False
    action: str = ACTION_CONFIRM


Confirm = Callable[[Summary], bool]


def _always(preview: Summary) -> bool:
    return True


def run_job(
    settings: Settings,
    options: JobOptions,
    console: Console,
    confirm: Confirm = _always,
    log: EventSink = no_events,
) -> Summary:
    """Read, plan, ask ``confirm``, record and send; a failed batch is data, not an error."""
    tokens, identity = _credentials(settings, options.action)  # config mistakes first
    inputs = read_inputs(options.inputs, options.column)
    for item in inputs.files:
        say(
            console,
            f"{item.path}: {item.rows:,} rows"
            + (f", read as {item.format}" if item.format else "")
            + f"; ID column {item.column!r} ({item.column_reason})",
        )
    for warning in inputs.warnings:
        say(console, warning, prefix="warning: ", style="yellow")
    ledger_path = options.ledger or default_ledger_path(settings, options, identity)
    record = RunRecord(
        command="run",
        config_digest=config_digest(settings),
        inputs=() if options.dry_run else tuple((str(p), file_sha256(p)) for p in options.inputs),
    )
    return _send_inputs(
        settings,
        inputs,
        identity,
        ledger_path,
        record,
        tokens,
        console,
        confirm,
        log,
        dry_run=options.dry_run,
    )


def undo_job(
    settings: Settings,
    confirmed_ledger: Path,
    console: Console,
    confirm: Confirm = _always,
    log: EventSink = no_events,
    *,
    dry_run: bool = False,
) -> Summary:
    """Dismiss every ID a confirmCompromised ledger may have applied, in an undo ledger of its own.

    That is the confirmed IDs and also the unsure ones (``unknown``, and ``sending`` left by a
    crash): Graph may have applied those, and dismissing a user is safe to repeat. The run's
    ledger stays locked meanwhile, so it cannot go on confirming while the undo dismisses. The
    undo ledger sits beside the original (``<name>.undo.sqlite``): the same undo resumes it.
    """
    lock = WriterLock.acquire(confirmed_ledger)
    try:
        meta, confirmed = _ledger_ids(confirmed_ledger, ("confirmed", "unknown", "sending"))
        if meta.get("action") != ACTION_CONFIRM:
            raise LedgerError(
                f"{confirmed_ledger}: undo reverses a {ACTION_CONFIRM} ledger, and this one is "
                f"for {meta.get('action')!r}; pass the ledger of the run to undo"
            )
        tokens, identity = _credentials(settings, ACTION_DISMISS)
        _same_tenant(confirmed_ledger, meta, identity, "undo")
        return _undo(
            settings, confirmed_ledger, confirmed, identity, tokens, console, confirm, log, dry_run
        )
    finally:
        lock.release()


def _undo(
    settings: Settings,
    confirmed_ledger: Path,
    confirmed: pl.DataFrame,
    identity: RunIdentity,
    tokens: TokenSource,
    console: Console,
    confirm: Confirm,
    log: EventSink,
    dry_run: bool,
) -> Summary:
    unsure = confirmed.filter(pl.col("status") != "confirmed").height
    ids = confirmed.select(
        "user_id",
        pl.lit(str(confirmed_ledger)).alias("source_file"),
        pl.int_range(1, confirmed.height + 1, dtype=pl.Int64).alias("source_row"),
    )
    inputs = InputSet(
        ids=ids,
        rejects=pl.DataFrame(
            schema={
                "source_file": pl.String,
                "source_row": pl.Int64,
                "raw_value": pl.String,
                "reason": pl.String,
            }
        ),
        files=(
            FileSummary(
                confirmed_ledger, ids.height, "user_id", "IDs it may have applied", ids.height, 0, 0
            ),
        ),
    )
    say(
        console,
        f"{confirmed_ledger}: {ids.height:,} IDs will be dismissed ({ids.height - unsure:,} "
        f"confirmed, {unsure:,} unsure: Graph may have applied them)",
    )
    undo_ledger = sibling(confirmed_ledger, ".undo.sqlite")
    record = RunRecord(command="undo", config_digest=config_digest(settings))
    return _send_inputs(
        settings,
        inputs,
        identity,
        undo_ledger,
        record,
        tokens,
        console,
        confirm,
        log,
        dry_run=dry_run,
    )


def _send_inputs(
    settings: Settings,
    inputs: InputSet,
    identity: RunIdentity,
    ledger_path: Path,
    record: RunRecord,
    tokens: TokenSource,
    console: Console,
    confirm: Confirm,
    log: EventSink,
    *,
    dry_run: bool,
) -> Summary:
    rejects_path = sibling(ledger_path, ".rejects.csv")
    if inputs.invalid:
        write_rejects(inputs.rejects, rejects_path)

    def summary(plan: Plan, outcome: SendOutcome | None = None) -> Summary:
        return _summary(
            record.command,
            settings,
            identity,
            dry_run,
            plan,
            outcome,
            inputs=inputs,
            ledger=ledger_path,
            rejects=rejects_path if inputs.invalid else None,
        )

    if dry_run:
        plan = make_plan(inputs, _known_states(ledger_path, identity), settings.send.batch_size)
        return summary(plan)
    ledger = Ledger.open(ledger_path, identity)
    try:
        say(console, f"ledger: {ledger_path}")
        plan = make_plan(inputs, ledger.known_states(), settings.send.batch_size)
        return _execute(settings, ledger, plan, record, tokens, console, confirm, summary, log)
    finally:
        ledger.close()


@dataclass(frozen=True)
class VerifySummary:
    ledger: str
    action: str
    expected_state: str
    checked: int
    confirmed: int
    processing: int
    not_confirmed: int
    requests: int
    report: str

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def verify_job(
    settings: Settings, ledger_path: Path, console: Console, out: Path | None = None
) -> VerifySummary:
    """Read back the risk state of every ID the ledger confirmed (or dismissed, for undo)."""
    meta, settled = _ledger_ids(ledger_path, ("confirmed",))
    ids = settled["user_id"].to_list()
    action = meta.get("action", ACTION_CONFIRM)
    tokens, identity = _credentials(settings, action)
    _same_tenant(ledger_path, meta, identity, "verify")
    if _simulated(settings):
        say(
            console,
            "the built-in simulator starts empty, so it knows none of these IDs; verify "
            'against the tenant (target = "graph") or a running `batcher simulate`',
            prefix="note: ",
            style="yellow",
        )
    result = anyio.run(_verify, settings, tokens, ids, action, identity.tenant, console)
    report = out or sibling(ledger_path, ".verify.csv")
    write_report(result.frame, report)
    counts = result.counts()
    return VerifySummary(
        ledger=str(ledger_path),
        action=action,
        expected_state=EXPECTED_STATE[action],
        checked=len(ids),
        confirmed=counts[CONFIRMED],
        processing=counts[PROCESSING],
        not_confirmed=counts[NOT_CONFIRMED],
        requests=result.requests,
        report=str(report),
    )


async def _verify(
    settings: Settings,
    tokens: TokenSource,
    ids: list[str],
    action: str,
    tenant: str,
    console: Console,
) -> Verification:
    async with _graph_client(settings, tokens, console) as client:
        _check_tenant(await tokens.token(), tenant)
        verifier = Verifier(
            client,
            Pacer(settings.send.rate_per_second),
            retry_for_seconds=settings.send.retry_for_seconds,
        )
        return await verifier.verify(ids, action)


def replay_job(
    settings: Settings,
    ledger_path: Path,
    only_code: str | None,
    console: Console,
    confirm: Confirm = _always,
    log: EventSink = no_events,
) -> Summary:
    """Send again the failed and unsure IDs of a ledger, as new attempts in that ledger."""
    reader = Ledger.open_existing(ledger_path)
    try:
        action = reader.meta().get("action", ACTION_CONFIRM)
    finally:
        reader.close()
    tokens, identity = _credentials(settings, action)
    ledger = Ledger.open(ledger_path, identity)
    try:
        ids = ledger.replay_candidates(only_code)
        left_out = len(ledger.replay_candidates(None)) - len(ids)  # other codes under --only
        counts = ledger.counts()
        if only_code is not None and not ids:
            codes = ", ".join(f"{c} ({n})" for c, n in ledger.error_codes().items()) or "none"
            raise LedgerError(
                f"{ledger_path}: no failed or unsure ID has error code {only_code!r}; "
                f"codes in this ledger: {codes}"
            )
        plan = Plan(
            to_send=pl.Series("user_id", ids, dtype=pl.String),
            new_ids=pl.DataFrame(schema={"user_id": pl.String}),
            already_done=counts["confirmed"],
            failed_before=left_out,
            batch_size=settings.send.batch_size,
        )
        if counts["planned"]:
            say(
                console,
                f"{counts['planned']:,} IDs in this ledger were never sent; "
                "run the original `batcher run` command to send them",
                prefix="note: ",
                style="yellow",
            )

        def summary(plan: Plan, outcome: SendOutcome | None = None) -> Summary:
            return _summary("replay", settings, identity, False, plan, outcome, ledger=ledger_path)

        record = RunRecord(command="replay", config_digest=config_digest(settings))
        return _execute(settings, ledger, plan, record, tokens, console, confirm, summary, log)
    finally:
        ledger.close()


def _execute(
    settings: Settings,
    ledger: Ledger,
    plan: Plan,
    record: RunRecord,
    tokens: TokenSource,
    console: Console,
    confirm: Confirm,
    summary: Callable[[Plan, SendOutcome | None], Summary],
    log: EventSink,
) -> Summary:
    """The gate, then record and send: until the operator agrees, the ledger holds no run, no
    new ID and no attempt (it may have just been created, empty)."""
    preview = summary(plan, None)
    if plan.to_send.len() and not confirm(preview):
        log("declined", command=record.command, to_send=preview.to_send)
        raise NotConfirmed("not confirmed: nothing was sent; run the same command to start again")
    run_id = ledger.begin_run(record)
    plan_fields = {k: v for k, v in preview.to_json().items() if isinstance(v, int | str)}
    log("run_started", **{**plan_fields, "run": run_id, "ledger": str(ledger.path)})
    ledger.add_ids(plan.new_ids)
    outcome = None
    if plan.to_send.len():
        action = ledger.meta()["action"]
        outcome = anyio.run(_send, settings, ledger, plan, tokens, action, console, log)
    result = summary(plan, outcome)
    report = sibling(ledger.path, ".report.csv")
    write_report(ledger.export(), report)
    result = dataclasses.replace(result, report=str(report))
    ledger.end_run(_outcome_record(result))
    log("run_finished", run=run_id, **_outcome_record(result))
    return result


async def _send(
    settings: Settings,
    ledger: Ledger,
    plan: Plan,
    tokens: TokenSource,
    action: str,
    console: Console,
    log: EventSink,
) -> SendOutcome:
    async with _graph_client(settings, tokens, console) as client:
        grace = settings.send.timeout_seconds + 5

        def on_stop(first: bool) -> None:
            if first:
                say(
                    console,
                    f"no new requests; waiting up to {grace:g}s for those in flight "
                    "(press Ctrl-C again to stop at once)",
                    prefix="stopping: ",
                    style="yellow",
                )
            else:
                say(console, "now; unanswered IDs stay unsure", prefix="stopping: ")

        from batcher.progress import RunProgress  # rich.progress loads only when sending

        progress = RunProgress(console, plan.to_send.len(), settings.send.batch_size)
        sender = Sender(
            ledger,
            client,
            Pacer(settings.send.rate_per_second),
            action=action,
            max_in_flight=settings.send.max_in_flight,
            retry_for_seconds=settings.send.retry_for_seconds,
            backoff=(settings.send.backoff_initial_seconds, settings.send.backoff_max_seconds),
            on_settled=progress,
            handle_signals=True,
            grace_seconds=grace,
            on_stop=on_stop,
            log=log,
            refused_after_refresh=lambda: tokens.refused_after_refresh,
        )
        _check_tenant(await tokens.token(), ledger.meta().get("tenant", ""))  # sign in first
        with progress:
            return await sender.run(plan.iter_batches())


@contextlib.asynccontextmanager
async def _graph_client(
    settings: Settings, tokens: TokenSource, console: Console
) -> AsyncIterator[GraphClient]:
    """A Graph client for this run (on the built-in simulator when asked); signs out after."""
    import httpx

    from batcher.graph import GraphClient

    with contextlib.ExitStack() as stack:
        stack.callback(tokens.close)
        base_url = stack.enter_context(_graph_endpoint(settings, console))
        timeout = httpx.Timeout(settings.send.timeout_seconds, connect=10.0)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
            yield GraphClient(http, base_url, settings.graph.api_version, tokens)


@contextlib.contextmanager
def _graph_endpoint(settings: Settings, console: Console) -> Iterator[str]:
    """The Graph base URL for this run, starting the built-in simulator when asked to."""
    from batcher.simulator import GraphSimulator, RunningSimulator

    if not _simulated(settings):
        yield settings.graph.base_url or CLOUDS[settings.graph.cloud].graph_url
        return
    with RunningSimulator(GraphSimulator(settings.simulator)) as sim:
        say(
            console,
            f"sending to the built-in Graph simulator at {sim.url}; no real tenant is touched",
            prefix="SIMULATOR: ",
            style="bold magenta",
        )
        yield sim.url


def _summary(
    command: str,
    settings: Settings,
    identity: RunIdentity,
    dry_run: bool,
    plan: Plan,
    outcome: SendOutcome | None,
    *,
    ledger: Path,
    inputs: InputSet | None = None,
    rejects: Path | None = None,
) -> Summary:
    return Summary(
        command=command,
        action=identity.action,
        target=settings.graph.target,
        tenant=identity.tenant,
        cloud=identity.cloud,
        api_version=identity.api_version,
        dry_run=dry_run,
        rows=inputs.rows if inputs else 0,
        valid=inputs.valid if inputs else 0,
        duplicates=inputs.duplicates if inputs else 0,
        invalid=inputs.invalid if inputs else 0,
        already_done=plan.already_done,
        failed_before=plan.failed_before,
        to_send=plan.to_send.len(),
        batches=plan.batches,
        estimated_seconds=plan.seconds_at(settings.send.rate_per_second),
        confirmed=outcome.confirmed if outcome else 0,
        failed=outcome.failed if outcome else 0,
        unknown=outcome.unknown if outcome else 0,
        requests=outcome.requests if outcome else 0,
        throttled=outcome.throttled if outcome else 0,
        seconds=outcome.seconds if outcome else 0.0,
        ledger=str(ledger) if ledger.exists() else None,
        rejects=str(rejects) if rejects else None,
        stopped=str(outcome.stopped_by) if outcome and outcome.stopped_by else None,
        interrupted=bool(outcome and outcome.interrupted),
    )


def _outcome_record(summary: Summary) -> dict[str, object]:
    keys = ("to_send", "confirmed", "failed", "unknown", "requests", "throttled", "interrupted")
    record: dict[str, object] = {k: getattr(summary, k) for k in keys}
    record["stopped"] = summary.stopped
    return record


def _credentials(settings: Settings, action: str) -> tuple[TokenSource, RunIdentity]:
    """How this run signs in (nothing is fetched yet), and what its ledger is about."""
    tokens = token_source(settings.auth, simulator=_simulated(settings), cloud=settings.graph.cloud)
    return tokens, _identity(settings, tokens, action)


def _simulated(settings: Settings) -> bool:
    return settings.graph.target == "simulator"


def _ledger_ids(path: Path, states: tuple[str, ...]) -> tuple[dict[str, str], pl.DataFrame]:
    """A ledger's meta and its per-ID rows in ``states``, read without taking it over."""
    reader = Ledger.open_existing(path)
    try:
        return reader.meta(), reader.export().filter(pl.col("status").is_in(states))
    finally:
        reader.close()


def _same_tenant(path: Path, meta: dict[str, str], identity: RunIdentity, command: str) -> None:
    if identity.tenant != meta.get("tenant"):
        raise LedgerError(
            f"{path}: written for tenant {meta.get('tenant')!r}, but the config signs in to "
            f"{identity.tenant!r}; {command} with the config of that run"
        )


def sibling(ledger: Path, suffix: str) -> Path:
    """A file beside the ledger: ledger.sqlite -> ledger.report.csv and so on."""
    return ledger.with_name(ledger.stem + suffix)


def _check_tenant(token: str, tenant: str) -> None:
    """Refuse a token for another tenant than the ledger's (when both name a tenant GUID)."""
    signed_in = tenant_of(token)
    if signed_in and _GUID.match(tenant) and signed_in.lower() != tenant.lower():
        raise AuthError(
            f"signed in to tenant {signed_in}, but this run (and its ledger) is for tenant "
            f"{tenant}; sign in to that tenant, or set [auth] tenant_id to the one you mean"
        )


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _identity(settings: Settings, tokens: TokenSource, action: str) -> RunIdentity:
    if settings.graph.target == "simulator":
        tenant = "simulator"
    elif settings.auth.tenant_id:
        tenant = settings.auth.tenant_id
    elif isinstance(tokens, StaticToken):
        tenant = tenant_of(tokens.value) or "token-tenant"
    else:  # the ledger must name the tenant before anything signs in (a dry run never does)
        raise ConfigError(
            f"[auth] method = {settings.auth.method!r} needs tenant_id: it names the ledger and "
            "is checked against the token, so a sign-in to another tenant cannot reuse this "
            "one's ledger; set it to the Directory (tenant) ID"
        )
    return RunIdentity(
        action=action,
        tenant=tenant,
        cloud=settings.graph.cloud,
        api_version=settings.graph.api_version,
    )


def default_ledger_path(settings: Settings, options: JobOptions, identity: RunIdentity) -> Path:
    """One ledger per (inputs, action, tenant): re-running the same command finds it again."""
    key = "\n".join(
        [*sorted(str(p.resolve()) for p in options.inputs), identity.action, identity.tenant]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    stem = options.inputs[0].name.split(".")[0][:40] if options.inputs else "ids"
    tenant = identity.tenant if len(identity.tenant) <= 12 else identity.tenant[:8]
    return settings.ledger.dir / f"{stem}-{identity.action}-{tenant}-{digest}.sqlite"


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


def _known_states(path: Path, identity: RunIdentity) -> pl.DataFrame:
    """The ledger's states for a dry run, without creating or changing anything."""
    if not path.exists():
        return pl.DataFrame(schema={"user_id": pl.String, "state": pl.String})
    ledger = Ledger.open_existing(path, identity)
    try:
        return ledger.known_states()
    finally:
        ledger.close()
