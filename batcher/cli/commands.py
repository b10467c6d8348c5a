"""The commands: a thin layer that builds a Job, calls the library and renders what it returns."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from batcher.actions import ACTIONS, CONTAIN, REMEDIATE, action_named, choose
from batcher.cli.edge import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    Outcome,
    as_typed,
    config_in_force,
    console,
    exit_codes,
    observers,
    settings_in_force,
)
from batcher.cli.evidence import comment_on, commented, evidence_report
from batcher.cli.help import Command, app
from batcher.cli.options import (
    ActionNames,
    AllRules,
    Column,
    Config,
    Contain,
    DryRun,
    IncludeAdmins,
    Json,
    LedgerArg,
    LogFile,
    MaxUsers,
    Sheet,
    yes_option,
)
from batcher.cli.render import plural, render_status, render_verify, say
from batcher.config import load_settings
from batcher.job.status import status
from batcher.platform import on_stop_signals

if TYPE_CHECKING:
    from batcher.config import Settings
    from batcher.eventlog import Observer
    from batcher.job.setup import Job
    from batcher.job.summary import Summary

# Each command imports what only it uses in its body: `batcher --help` and `batcher status`
# start without polars, httpx and the simulator (tests/test_cli_start.py).


@app.command("run", cls=Command)
def run_command(
    inputs: Annotated[
        list[Path] | None, typer.Argument(metavar="INPUT", help="Exports listing users.")
    ] = None,
    config: Config = None,
    ledger: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Ledger file (default: one per inputs).")
    ] = None,
    column: Column = None,
    sheet: Sheet = None,
    action: ActionNames = None,
    contain: Contain = False,
    remediate: Annotated[
        bool,
        typer.Option(
            "--remediate",
            help=f"The whole clean-up: --action {' --action '.join(REMEDIATE)}.",
        ),
    ] = False,
    dry_run: DryRun = False,
    yes: Annotated[bool, yes_option("after a --dry-run")] = False,
    max_users: MaxUsers = None,
    resend: Annotated[
        bool, typer.Option("--resend", help="Send what another recent run already did.")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN",
            help="Start of the incident window: 7d, 36h, 90m or an ISO time (no zone: UTC).",
        ),
    ] = None,
    passwords_out: Annotated[
        Path | None,
        typer.Option(
            "--passwords-out",
            metavar="FILE",
            help="Write the new passwords to this owner-only CSV for the help desk.",
        ),
    ] = None,
    incident: Annotated[
        str | None,
        typer.Option(
            metavar="ID",
            help="Users in a Defender XDR incident's alerts' evidence (see --comment).",
        ),
    ] = None,
    evidence: Annotated[
        str | None,
        typer.Option(metavar="KINDS", help="With --incident: user,mailbox,recipient."),
    ] = None,
    risky: Annotated[
        str | None,
        typer.Option(metavar="LEVEL[,LEVEL]", help="Risky users at risk at these levels."),
    ] = None,
    signed_in_from: Annotated[
        str | None,
        typer.Option(
            "--signed-in-from",
            metavar="ADDR[,ADDR]",
            help="Users who signed in from these (--since).",
        ),
    ] = None,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Read the sources again; say what changed.")
    ] = False,
    post_comment: Annotated[
        bool,
        typer.Option("--comment", help="After the run, comment on --incident: counts, run ID."),
    ] = False,
    include_admins: IncludeAdmins = False,
    all_rules: AllRules = False,
    as_json: Json = False,
    log_file: LogFile = None,
) -> None:
    """Act on the users in INPUT... and the sources; re-running the same command resumes."""
    from batcher.cli.jobs import Consent, build_job, send_job
    from batcher.job.run import RunOptions, run
    from batcher.job.sources import SourceOptions

    sources = SourceOptions(incident, evidence, risky, signed_in_from, refresh)
    files = tuple(inputs or ())
    options = RunOptions(
        files,
        column,
        sheet,
        dry_run,
        resend,
        since=since,
        passwords_out=passwords_out,
        sources=sources,
        include_admins=include_admins,
        all_rules=all_rules,
    )

    def build(settings: Settings, watch: Observer) -> Job:
        comment_on(post_comment, incident)  # refused before anything is sent
        return build_job(
            settings,
            choose(
                [*(action or []), *(CONTAIN if contain else ()), *(REMEDIATE if remediate else ())]
            ),
            ledger,
            (*files, *sources.names()),
            watch,
            yes=Consent(yes, max_users),
            offline=dry_run,
        )

    def work(job: Job) -> Summary:
        summary = run(job, options)
        target = comment_on(post_comment, incident)
        if target is None or job.ledger is None:
            return summary
        if summary.dry_run or summary.interrupted or summary.stopped:
            return summary
        return replace(summary, notes=(*summary.notes, commented(job, job.ledger, target)))

    send_job("run", config, (as_json, log_file), build, work)


@app.command("replay", cls=Command)
def replay_command(
    ledger: LedgerArg,
    config: Config = None,
    only: Annotated[
        str | None, typer.Option(metavar="CODE", help="Only steps whose Graph error is CODE.")
    ] = None,
    action: Annotated[str | None, typer.Option(metavar="NAME", help="Only this action.")] = None,
    yes: Annotated[bool, yes_option("for scripts")] = False,
    max_users: MaxUsers = None,
    include_admins: IncludeAdmins = False,
    as_json: Json = False,
    log_file: LogFile = None,
) -> None:
    """Send again the failed and unknown steps of LEDGER, as new attempts in it. The guards
    are read again: a protected user gets no write, an administrator no step that touches
    access (unless --include-admins)."""
    from batcher.cli.jobs import Consent, build_job, send_job
    from batcher.job.ledgers import recorded_actions
    from batcher.job.replay import ReplayOptions, replay

    chosen = action_named(action).name if action else None
    send_job(
        "replay",
        config,
        (as_json, log_file),
        lambda settings, watch: build_job(
            settings,
            tuple(ACTIONS[a] for a in recorded_actions(ledger)),
            ledger,
            (),
            watch,
            yes=Consent(yes, max_users),
        ),
        lambda job: replay(job, ReplayOptions(only, chosen, include_admins)),
    )


@app.command("undo", cls=Command)
def undo_command(
    ledger: LedgerArg,
    config: Config = None,
    dry_run: DryRun = False,
    yes: Annotated[bool, yes_option("after a --dry-run")] = False,
    max_users: MaxUsers = None,
    include_admins: IncludeAdmins = False,
    as_json: Json = False,
    log_file: LogFile = None,
) -> None:
    """Reverse what LEDGER did where it can be (disable -> enable, confirm -> dismiss). A
    protected user gets no write; enable, dismiss and enable-mail-rules restore what the run
    did, so administrators are not held back from them (from disable, unless --include-admins)."""
    from batcher.cli.jobs import Consent, build_job, send_job
    from batcher.job.ledgers import undo_ledger
    from batcher.job.undo import undo, undo_actions

    send_job(
        "undo",
        config,
        (as_json, log_file),
        lambda settings, watch: build_job(
            settings,
            tuple(ACTIONS[a] for a in undo_actions(ledger)),
            undo_ledger(ledger),
            (),
            watch,
            yes=Consent(yes, max_users),
            offline=dry_run,
        ),
        lambda job: undo(job, ledger, dry_run=dry_run, include_admins=include_admins),
    )


@app.command("verify", cls=Command)
def verify_command(
    ledger: LedgerArg,
    config: Config = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="FILE", help="Per user (.csv, ...).")
    ] = None,
    unread: Annotated[
        bool, typer.Option("--unread", help="Read only what the last verify did not read.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Read back every step LEDGER did: as expected, still processing, not, or not read."""
    from batcher.cli.jobs import build_job, closing
    from batcher.job.ledgers import recorded_actions
    from batcher.job.verify import VerifyOptions, verify
    from batcher.report.files import check_out_folder

    output = Outcome("verify", as_json)
    with exit_codes(output), observers(None) as watch:
        settings = settings_in_force(config)
        if out is not None:
            check_out_folder(out)
        actions = tuple(ACTIONS[a] for a in recorded_actions(ledger))
        job = build_job(settings, actions, ledger, (), watch, yes=True)
        if job.simulated:
            say(
                console,
                "the built-in simulator starts empty and knows none of these users; verify "
                'against the tenant (target = "graph") or a running `batcher simulate`',
                prefix="note: ",
                style="yellow",
            )
        with closing(job), on_stop_signals(output.on_signal(job.stop.ask)):
            result = verify(job, VerifyOptions(out, unread))
    if result.nothing_to_verify:
        say(console, result.nothing_to_verify, prefix="batcher: ")
        output.finish(EXIT_SOME_FAILED, result.result(), result.nothing_to_verify)
        raise typer.Exit(EXIT_SOME_FAILED)
    render_verify(result, console)
    if result.total("not_read"):
        say(
            console,
            f"{result.total('not_read'):,} users were not read; to finish the check: "
            + as_typed(
                "verify", str(ledger), *(["--config", str(config)] if config else []), "--unread"
            ),
            style="yellow",
        )
    if result.total("processing"):
        say(console, "Identity Protection applies feedback offline; verify again in a while")
    bad = result.total("checked") - result.total("as_expected")
    code = EXIT_SOME_FAILED if bad else EXIT_OK
    output.finish(code, result.result(), f"{plural(bad, 'step')} not as expected" if bad else None)
    raise typer.Exit(code)


@app.command("resolve", cls=Command)
def resolve_command(
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT", help="Exports listing users.")],
    config: Config = None,
    column: Column = None,
    sheet: Sheet = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="FILE", help="The table (.csv, ...).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Only look the users in INPUT... up in the directory and write the table; no writes."""
    from batcher.cli.jobs import build_job, closing
    from batcher.job.resolve import ResolveOptions, resolve
    from batcher.report.files import check_out_folder

    output = Outcome("resolve", as_json)
    with exit_codes(output), observers(None) as watch:
        settings = settings_in_force(config)
        if out is not None:
            check_out_folder(out)
        job = build_job(settings, (), None, inputs, watch, yes=True)
        target = out or settings.ledger.folder / f"{inputs[0].name.split('.')[0]}.resolved.csv"
        with closing(job), on_stop_signals(output.on_signal(job.stop.ask)):
            result = resolve(job, ResolveOptions(tuple(inputs), target, column, sheet))
    output.finish(EXIT_OK, result.result())
    counts = result.inputs
    say(
        console,
        f"{counts.looked_up:,} looked up in {plural(counts.lookup_requests, 'request')}: "
        f"{counts.resolved:,} resolved, {counts.not_found:,} not found, {counts.ambiguous:,} "
        f"ambiguous, {plural(counts.guests, 'guest')}, {counts.not_looked_up:,} not looked up "
        f"(Graph did not answer); {plural(counts.invalid, 'invalid row')}",
    )
    say(console, f"table:   {result.out}")


@app.command("report", cls=Command)
def report_command(
    ledger: LedgerArg,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="FILE", help="Report: .csv, .parquet, .json or .html."),
    ],
    as_json: Json = False,
) -> None:
    """Write one row per user per action of LEDGER: state, attempts, Graph's answer, source."""
    import polars as pl

    from batcher.ledger import Ledger
    from batcher.report.files import (
        PAGE_FORMAT,
        REPORT_FORMATS,
        check_out_folder,
        check_report_path,
        step_report,
        write_report,
    )

    output = Outcome("report", as_json)
    if out.suffix.lower() == PAGE_FORMAT:
        evidence_report(ledger, out, output)
        return
    with exit_codes(output):
        check_report_path(out, (*REPORT_FORMATS, PAGE_FORMAT))
        check_out_folder(out)
        book = Ledger.open_existing(ledger)
        try:
            frame = step_report(book.report(), book.guarded(), book.item_rows())
        finally:
            book.close()
        write_report(frame, out)
    steps = frame.filter(pl.col("action").is_not_null())  # the rest: guarded users, no step
    counts = steps.group_by("action", "state").len().sort("action", "state").rows()
    per_action: dict[str, dict[str, int]] = {}
    for action_name, state, n in counts:
        per_action.setdefault(action_name, {})[state] = n
    output.finish(EXIT_OK, {"out": str(out), "steps": steps.height, "counts": per_action})
    say(
        console,
        f"{out}: {steps.height:,} steps ("
        + ", ".join(f"{a} {s} {n:,}" for a, s, n in counts)
        + ")",
    )


@app.command("status", cls=Command)
def status_command(ledger: LedgerArg, as_json: Json = False) -> None:
    """Counts by action and state in LEDGER, what they mean, and how its last run ended."""
    output = Outcome("status", as_json)
    with exit_codes(output):
        result = status(ledger)
    render_status(result, console)
    if as_json:
        from batcher.cli.schema import status_result  # its models: only with --json

        output.finish(EXIT_OK, status_result(result))


@app.command(cls=Command)
def simulate(
    config: Config = None,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Loopback address.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, metavar="PORT", help="0 picks a free one.")
    ] = 8765,
    rate: Annotated[float | None, typer.Option(metavar="N", help="Requests a second.")] = None,
    burst: Annotated[int | None, typer.Option(metavar="N", help="Requests at once.")] = None,
) -> None:
    """Serve the Graph simulator in the foreground until Ctrl-C."""
    from batcher.auth import SIMULATOR_TOKEN
    from batcher.simulator import GraphSimulator, RunningSimulator

    with exit_codes(Outcome("simulate")):
        settings = load_settings(config_in_force(config)).simulator
        changes = {"rate_per_second": rate, "burst": burst}
        settings = settings.model_copy(update={k: v for k, v in changes.items() if v is not None})
        server = RunningSimulator(GraphSimulator(settings), host=host, port=port)
    say(
        console,
        f"Graph simulator on {server.url} (rate {settings.rate_per_second:g}/s, burst "
        f"{settings.burst}); bearer token: {SIMULATOR_TOKEN}; Ctrl-C stops it",
    )
    server.serve_forever()
