"""The commands: a thin layer that builds a Job, calls the library and renders what it returns."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from batcher.actions import ACTIONS, CONTAIN, DEFAULT_ACTION, Action, action_named, choose
from batcher.calls import StopSignal
from batcher.cli.edge import (
    EXIT_AUTH,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_UNREACHABLE,
    as_typed,
    console,
    device_code_prompt,
    exit_codes,
    gate,
    observers,
    this_command,
)
from batcher.cli.help import Command, app
from batcher.config import Settings, load_settings
from batcher.eventlog import Observer
from batcher.job import (
    Job,
    ReplayOptions,
    ResolveOptions,
    RunOptions,
    Summary,
    VerifyOptions,
    default_path,
    identity,
    legacy_path,
    recorded_actions,
    replay,
    resolve,
    run,
    signing_in,
    status,
    undo,
    undo_actions,
    undo_ledger,
    verify,
)
from batcher.platform import on_stop_signals
from batcher.report import render_status, render_summary, render_verify, say
from batcher.report.files import check_report_path, step_report, write_report
from batcher.report.render import plural

Config = Annotated[
    Path | None,
    typer.Option("--config", "-c", metavar="FILE", help="TOML config (default: the simulator)."),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout at the end.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Plan only: no request, no file.")]
LogFile = Annotated[
    Path | None,
    typer.Option("--log-file", metavar="FILE", help="Append JSON lines: requests, state changes."),
]
Column = Annotated[
    str | None,
    typer.Option(
        metavar="NAME", help="The ID column; a dotted path in JSON (properties.AadUserId)."
    ),
]
Sheet = Annotated[str | None, typer.Option(metavar="NAME", help="The workbook sheet to read.")]
LedgerArg = Annotated[Path, typer.Argument(metavar="LEDGER", help="The ledger a run printed.")]


def _yes(after: str) -> Any:
    return typer.Option("--yes", "-y", help=f"Skip the confirmation prompt ({after}).")


@app.command("run", cls=Command)
def run_command(
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT", help="Exports listing users.")],
    config: Config = None,
    ledger: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Ledger file (default: one per inputs).")
    ] = None,
    column: Column = None,
    sheet: Sheet = None,
    action: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME", help=f"Repeatable: {', '.join(ACTIONS)} (default: {DEFAULT_ACTION})."
        ),
    ] = None,
    contain: Annotated[
        bool, typer.Option("--contain", help=f"Short for --action {' --action '.join(CONTAIN)}.")
    ] = False,
    dry_run: DryRun = False,
    yes: Annotated[bool, _yes("after a --dry-run")] = False,
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
    as_json: Json = False,
    log_file: LogFile = None,
) -> None:
    """Act on the users in INPUT...; re-running the same command resumes."""
    options = RunOptions(
        tuple(inputs), column, sheet, dry_run, resend, since=since, passwords_out=passwords_out
    )
    _send(
        config,
        (as_json, log_file),
        lambda settings, watch: _job(
            settings,
            choose([*(action or []), *(CONTAIN if contain else ())]),
            ledger,
            inputs,
            watch,
            yes=yes,
            offline=dry_run,
        ),
        lambda job: run(job, options),
    )


@app.command("replay", cls=Command)
def replay_command(
    ledger: LedgerArg,
    config: Config = None,
    only: Annotated[
        str | None, typer.Option(metavar="CODE", help="Only steps whose Graph error is CODE.")
    ] = None,
    action: Annotated[str | None, typer.Option(metavar="NAME", help="Only this action.")] = None,
    yes: Annotated[bool, _yes("for scripts")] = False,
    as_json: Json = False,
    log_file: LogFile = None,
) -> None:
    """Send again the failed and unknown steps of LEDGER, as new attempts in it."""
    chosen = action_named(action).name if action else None
    _send(
        config,
        (as_json, log_file),
        lambda settings, watch: _job(
            settings,
            tuple(ACTIONS[a] for a in recorded_actions(ledger)),
            ledger,
            (),
            watch,
            yes=yes,
        ),
        lambda job: replay(job, ReplayOptions(only, chosen)),
    )


@app.command("undo", cls=Command)
def undo_command(
    ledger: LedgerArg,
    config: Config = None,
    dry_run: DryRun = False,
    yes: Annotated[bool, _yes("after a --dry-run")] = False,
    as_json: Json = False,
    log_file: LogFile = None,
) -> None:
    """Reverse what LEDGER did where it can be (disable -> enable, confirm -> dismiss)."""
    _send(
        config,
        (as_json, log_file),
        lambda settings, watch: _job(
            settings,
            tuple(ACTIONS[a] for a in undo_actions(ledger)),
            undo_ledger(ledger),
            (),
            watch,
            yes=yes,
            offline=dry_run,
        ),
        lambda job: undo(job, ledger, dry_run=dry_run),
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
    with exit_codes(as_json=as_json), observers(None) as watch:
        settings = load_settings(config)
        actions = tuple(ACTIONS[a] for a in recorded_actions(ledger))
        job = _job(settings, actions, ledger, (), watch, yes=True)
        if job.simulated:
            say(
                console,
                "the built-in simulator starts empty and knows none of these users; verify "
                'against the tenant (target = "graph") or a running `batcher simulate`',
                prefix="note: ",
                style="yellow",
            )
        with _closing(job), on_stop_signals(job.stop.ask):
            result = verify(job, VerifyOptions(out, unread))
    if as_json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    if result.nothing_to_verify:
        say(console, result.nothing_to_verify, prefix="batcher: ")
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
    good = result.total("as_expected") == result.total("checked")
    raise typer.Exit(EXIT_OK if good else EXIT_SOME_FAILED)


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
    with exit_codes(as_json=as_json), observers(None) as watch:
        settings = load_settings(config)
        job = _job(settings, (), None, inputs, watch, yes=True)
        target = out or settings.ledger.folder / f"{inputs[0].name.split('.')[0]}.resolved.csv"
        with _closing(job), on_stop_signals(job.stop.ask):
            result = resolve(job, ResolveOptions(tuple(inputs), target, column, sheet))
    if as_json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
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
        Path, typer.Option("--out", "-o", metavar="FILE", help="Report: .csv, .parquet or .json.")
    ],
) -> None:
    """Write one row per user per action of LEDGER: state, attempts, Graph's answer, source."""
    from batcher.ledger import Ledger

    with exit_codes():
        check_report_path(out)
        book = Ledger.open_existing(ledger)
        try:
            frame = step_report(book.report())
        finally:
            book.close()
        write_report(frame, out)
    counts = frame.group_by("action", "state").len().sort("action", "state").rows()
    say(
        console,
        f"{out}: {frame.height:,} steps ("
        + ", ".join(f"{a} {s} {n:,}" for a, s, n in counts)
        + ")",
    )


@app.command("status", cls=Command)
def status_command(ledger: LedgerArg) -> None:
    """Counts by action and state in LEDGER, what they mean, and how its last run ended."""
    with exit_codes():
        result = status(ledger)
    render_status(result, console)


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

    with exit_codes():
        settings = load_settings(config).simulator
        changes = {"rate_per_second": rate, "burst": burst}
        settings = settings.model_copy(update={k: v for k, v in changes.items() if v is not None})
        server = RunningSimulator(GraphSimulator(settings), host=host, port=port)
    say(
        console,
        f"Graph simulator on {server.url} (rate {settings.rate_per_second:g}/s, burst "
        f"{settings.burst}); bearer token: {SIMULATOR_TOKEN}; Ctrl-C stops it",
    )
    server.serve_forever()


def _send(
    config: Path | None,
    output: tuple[bool, Path | None],
    build: Callable[[Settings, Observer], Job],
    work: Callable[[Job], Summary],
) -> None:
    """What run, replay and undo share: errors become exit codes; the console, the progress
    bar and the log file watch; Ctrl-C reaches the job; the summary is rendered."""
    as_json, log_file = output
    resume = this_command()  # it looks batcher up on PATH: once
    with exit_codes(resume, as_json), observers(log_file) as watch:
        job = replace(build(load_settings(config), watch), command_line=resume)  # to resume it
        with _closing(job), on_stop_signals(job.stop.ask):
            summary = work(job)
    _finish(summary, as_json, config, resume)


def _job(
    settings: Settings,
    actions: tuple[Action, ...],
    ledger: Path | None,
    inputs: Sequence[Path],
    observer: Observer,
    *,
    yes: bool,
    offline: bool = False,
) -> Job:
    tokens = signing_in(settings, offline=offline, prompt=device_code_prompt)
    who = identity(settings, tokens, actions)
    if ledger is None and inputs and who.tenant:
        ledger = default_path(settings, inputs, who)
        old = legacy_path(inputs, who)
        if not ledger.exists() and old is not None and old.exists():
            ledger = old  # where batcher 0.1 put it: resume it there
    job = Job(settings, who, tokens, ledger, observer, stop=StopSignal())
    return replace(job, confirm=gate(job.simulated, yes))


@contextlib.contextmanager
def _closing(job: Job) -> Iterator[Job]:
    """The job, its token source (which ``_job`` signed in with) closed at the end."""
    try:
        yield job
    finally:
        if job.tokens is not None:
            job.tokens.close()


def _finish(summary: Summary, as_json: bool, config: Path | None, resume: str) -> None:
    render_summary(summary, console)
    if summary.target == "simulator" and not summary.dry_run:
        say(
            console,
            "this was the built-in simulator; no real tenant was touched",
            prefix="SIMULATOR: ",
            style="bold magenta",
        )
    if as_json:
        sys.stdout.write(json.dumps(summary.to_json()) + "\n")
        sys.stdout.flush()
    raise typer.Exit(_exit_code(summary, config, resume))


def _exit_code(summary: Summary, config: Path | None, resume: str) -> int:
    if summary.stopped:
        say(console, summary.stopped, prefix="batcher: error: ", style="red")
        say(console, f"to resume once fixed: {resume}")
        return EXIT_UNREACHABLE if summary.unreachable else EXIT_AUTH
    if summary.interrupted:
        say(console, f"interrupted; everything done so far is in the ledger; to resume: {resume}")
        return EXIT_INTERRUPTED
    if summary.dry_run:
        return EXIT_OK
    pending = summary.unknown + summary.not_sent
    if pending or summary.inputs.not_looked_up:
        what = [plural(pending, "step") + " unknown or not sent"] if pending else []
        if summary.inputs.not_looked_up:
            what.append(plural(summary.inputs.not_looked_up, "identity") + " not looked up")
        say(console, f"{' and '.join(what)}; to send them again: {resume}")
        return EXIT_SOME_FAILED
    if summary.failed:
        replay_cmd = as_typed(
            "replay", summary.ledger or "LEDGER", *(["--config", str(config)] if config else [])
        )
        say(
            console,
            f"{plural(summary.failed, 'step')} failed; the report has Graph's error codes and "
            f"why; once the cause is fixed: {replay_cmd}",
        )
        return EXIT_SOME_FAILED
    return EXIT_OK
