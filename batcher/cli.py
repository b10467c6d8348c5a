"""The command line: a thin layer over the library; the only place errors become exit codes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from batcher import __version__
from batcher.config import Settings, load_settings
from batcher.errors import AuthError, BatcherError, ConfigError, NotConfirmed
from batcher.eventlog import EventLog, EventSink, no_events
from batcher.ledger import Ledger
from batcher.report import (
    REPORT_FORMATS,
    Summary,
    render_plan,
    render_summary,
    say,
    write_report,
)
from batcher.runner import JobOptions, replay_job, run_job, undo_job, verify_job

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Confirm Microsoft Entra users compromised in paced, resumable batches.",
)
console = Console(stderr=True, soft_wrap=True)


@contextmanager
def _exit_codes(resume_hint: str | None = None, as_json: bool = False) -> Iterator[None]:
    """The only place errors become exit codes and one-line messages (and, with --json, a
    JSON object on stdout, so a script always gets one)."""
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, typer.Exit | SystemExit):
            raise
        code, message = _describe_error(_leaf(exc), resume_hint)
        say(console, message, prefix="batcher: ", style="red" if code != EXIT_INTERRUPTED else "")
        if as_json:
            sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
        raise typer.Exit(code) from None


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe_error(exc: BaseException, resume_hint: str | None) -> tuple[int, str]:
    if isinstance(exc, KeyboardInterrupt):
        hint = f"; to resume: {resume_hint}" if resume_hint else ""
        return EXIT_INTERRUPTED, f"interrupted; the ledger keeps everything done so far{hint}"
    if isinstance(exc, BatcherError):
        return (EXIT_AUTH if isinstance(exc, AuthError) else EXIT_USAGE), f"error: {exc}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_USAGE, f"error: {where}{exc.strerror or exc}"
    return EXIT_INTERNAL, (  # a bug: still one line, no traceback
        f"internal error: {type(exc).__name__}: {exc}; the ledger keeps what was done; "
        "run the same command to resume, and please report this"
    )


def _version(value: bool) -> None:
    if value:
        typer.echo(f"batcher {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """batcher reads exports of Entra user IDs and confirms them compromised through Graph."""


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config (default: built-in simulator settings)."),
]


YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Skip the confirmation prompt (after a --dry-run).")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Plan only; send nothing.")]
LogFileOption = Annotated[
    Path | None,
    typer.Option("--log-file", help="Append JSON lines: one per request and per state change."),
]


@contextmanager
def _event_log(path: Path | None) -> Iterator[EventSink]:
    if path is None:
        yield no_events
        return
    with EventLog(path) as log:
        yield log


@app.command()
def run(
    inputs: Annotated[list[Path], typer.Argument(help="Export files holding user IDs.")],
    config: ConfigOption = None,
    ledger: Annotated[
        Path | None, typer.Option(help="Ledger file (default: derived from inputs and tenant).")
    ] = None,
    column: Annotated[
        str | None,
        typer.Option(help="The ID column; a dotted path in JSON, e.g. properties.AccountObjectId."),
    ] = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
    log_file: LogFileOption = None,
) -> None:
    """Confirm the users in INPUTS compromised; re-running the same command resumes."""
    resume = _this_command()
    with _exit_codes(resume, as_json), _event_log(log_file) as log:
        settings = load_settings(config)
        summary = run_job(
            settings,
            JobOptions(inputs=tuple(inputs), column=column, ledger=ledger, dry_run=dry_run),
            console,
            _gate(settings, yes),
            log,
        )
    _finish(summary, as_json, resume, config)


@app.command()
def replay(
    ledger: Annotated[Path, typer.Argument(help="The ledger of an earlier run.")],
    config: ConfigOption = None,
    only: Annotated[
        str | None, typer.Option("--only", help="Only IDs whose Graph error code is CODE.")
    ] = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
    log_file: LogFileOption = None,
) -> None:
    """Send again the failed and unsure IDs of LEDGER, recorded as new attempts in it."""
    resume = _this_command()
    with _exit_codes(resume, as_json), _event_log(log_file) as log:
        settings = load_settings(config)
        summary = replay_job(settings, ledger, only, console, _gate(settings, yes), log)
    _finish(summary, as_json, resume, config)


@app.command()
def undo(
    ledger: Annotated[Path, typer.Argument(help="The ledger of the confirmCompromised run.")],
    config: ConfigOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
    log_file: LogFileOption = None,
) -> None:
    """Dismiss exactly the IDs LEDGER confirmed (a wrong list), recorded in an undo ledger."""
    resume = _this_command()
    with _exit_codes(resume, as_json), _event_log(log_file) as log:
        settings = load_settings(config)
        summary = undo_job(settings, ledger, console, _gate(settings, yes), log, dry_run=dry_run)
    _finish(summary, as_json, resume, config)


@app.command()
def verify(
    ledger: Annotated[Path, typer.Argument(help="A ledger of a run (or of an undo).")],
    config: ConfigOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Per-ID result (.csv, .parquet, .json).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Read back each ID LEDGER settled: confirmed, still processing, or not confirmed."""
    with _exit_codes(as_json=as_json):
        _check_report_name(out)
        settings = load_settings(config)
        result = verify_job(settings, ledger, console, out)
    table = Table(title=f"batcher verify: expected riskState {result.expected_state}")
    table.add_column("", style="bold")
    table.add_column("IDs", justify="right")
    for label, value in [
        ("checked", result.checked),
        ("confirmed", result.confirmed),
        ("still processing (normal for a while)", result.processing),
        ("not confirmed", result.not_confirmed),
        ("read requests", result.requests),
    ]:
        table.add_row(label, f"{value:,}")
    console.print(table)
    say(console, f"per ID:  {result.report}")
    if as_json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    if result.processing:
        say(console, "Identity Protection applies feedback offline; verify again in a while")
    raise typer.Exit(EXIT_OK if result.confirmed == result.checked else EXIT_SOME_FAILED)


@app.command()
def report(
    ledger: Annotated[Path, typer.Argument(help="A ledger file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report file: .csv, .parquet or .json.")],
) -> None:
    """Write one row per ID of LEDGER: status, attempts, Graph's answer, request IDs, source."""
    with _exit_codes():
        _check_report_name(out)
        book = Ledger.open_existing(ledger)
        try:
            frame = book.export()
        finally:
            book.close()
        write_report(frame, out)
    counts = frame.group_by("status").len().sort("status").rows()
    say(
        console, f"{out}: {frame.height:,} IDs (" + ", ".join(f"{s} {n:,}" for s, n in counts) + ")"
    )


def _gate(settings: Settings, yes: bool) -> Callable[[Summary], bool]:
    """Before any real send: show the blast radius and make the operator type the count."""

    def confirm(plan: Summary) -> bool:
        if settings.graph.target == "simulator" or yes:
            return True
        if not sys.stdin.isatty():
            raise NotConfirmed(
                "refusing to send without confirmation: there is no terminal to ask on; "
                "check the plan with --dry-run, then pass --yes"
            )
        render_plan(plan, console)
        say(
            console,
            f"{plan.action} for {plan.to_send:,} users on tenant {plan.tenant} "
            f"({plan.cloud} cloud, Graph {plan.api_version}). Conditional Access may block "
            "them or force a password reset.",
            prefix="About to send ",
            style="bold red",
        )
        try:
            answer = console.input(f"Type {plan.to_send} (the number of users) or yes to go on: ")
        except EOFError:
            return False
        return answer.strip().lower().replace(",", "") in {str(plan.to_send), "yes"}

    return confirm


def _check_report_name(out: Path | None) -> None:
    if out is not None and out.suffix.lower() not in REPORT_FORMATS:
        raise ConfigError(
            f"--out {out}: unknown report format {out.suffix or '(none)'!r}; "
            f"end the name with {', '.join(REPORT_FORMATS)}"
        )


def _finish(summary: Summary, as_json: bool, resume: str, config: Path | None) -> None:
    render_summary(summary, console)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_json()) + "\n")
        sys.stdout.flush()
    raise typer.Exit(_exit_code(summary, resume, config))


def _exit_code(summary: Summary, resume: str, config: Path | None) -> int:
    if summary.stopped:
        say(console, summary.stopped, prefix="batcher: error: ", style="red")
        say(console, f"to resume once fixed: {resume}")
        return EXIT_AUTH
    if summary.interrupted:
        say(console, f"interrupted; everything done so far is in the ledger; to resume: {resume}")
        return EXIT_INTERRUPTED
    if summary.dry_run:
        return EXIT_OK
    if summary.unknown or summary.unsent:
        say(
            console,
            f"{summary.unknown + summary.unsent:,} IDs are unsure or unsent; "
            f"to send them again: {resume}",
        )
        return EXIT_SOME_FAILED
    if summary.failed or summary.failed_before:
        replay_cmd = " ".join(
            [_program(), "replay", _quote(summary.ledger or "LEDGER")]
            + (["--config", _quote(str(config))] if config else [])
        )
        say(
            console,
            f"{summary.failed + summary.failed_before:,} IDs failed; the ledger has Graph's "
            f"error codes (batcher report); once the cause is fixed: {replay_cmd}",
        )
        return EXIT_SOME_FAILED
    return EXIT_OK


def _program() -> str:
    """How this batcher was started, so printed commands can be pasted as they are."""
    argv0 = sys.argv[0] if sys.argv else "batcher"
    if argv0.endswith("__main__.py"):
        return "python -m batcher"
    return _quote(argv0) if os.sep in argv0 and not argv0.startswith(os.sep) else "batcher"


def _this_command() -> str:
    return " ".join([_program(), *map(_quote, sys.argv[1:])])


@app.command()
def status(ledger: Annotated[Path, typer.Argument(help="A ledger file.")]) -> None:
    """Counts by state in a ledger (safe while a run is writing it)."""
    with _exit_codes():
        book = Ledger.open_existing(ledger)
        try:
            meta, counts = book.meta(), book.counts()
        finally:
            book.close()
    say(
        console,
        f"{ledger}: {meta.get('action')} on tenant {meta.get('tenant')} "
        f"({meta.get('cloud')}, {meta.get('api_version')})",
    )
    for state, n in counts.items():
        say(console, f"  {state:<10} {n:>10,}")


@app.command()
def simulate(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Loopback address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0 picks a free one).")
    ] = 8765,
    rate: Annotated[float | None, typer.Option(help="Requests per second allowed.")] = None,
    burst: Annotated[int | None, typer.Option(help="Requests allowed at once.")] = None,
) -> None:
    """Serve the Graph simulator in the foreground until Ctrl-C."""
    from batcher.auth import SIMULATOR_TOKEN
    from batcher.simulator import GraphSimulator, RunningSimulator

    with _exit_codes():
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


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./=:@," for c in arg) else repr(arg)


def main() -> None:
    app()
