"""The command line: a thin layer over the library; the only place errors become exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from batcher import __version__
from batcher.config import load_settings
from batcher.errors import AuthError, BatcherError
from batcher.ledger import Ledger
from batcher.report import Summary, render_summary, say
from batcher.runner import JobOptions, run_job

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
def _exit_codes(resume_hint: str | None = None) -> Iterator[None]:
    """The only place errors become exit codes and one-line messages."""
    try:
        yield
    except AuthError as exc:
        say(console, str(exc), prefix="batcher: error: ", style="red")
        raise typer.Exit(EXIT_AUTH) from None
    except BatcherError as exc:
        say(console, str(exc), prefix="batcher: error: ", style="red")
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        hint = f"; to resume, run: {resume_hint}" if resume_hint else ""
        say(console, f"batcher: interrupted; the ledger keeps everything done so far{hint}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        say(console, f"{where}{exc.strerror}", prefix="batcher: error: ", style="red")
        raise typer.Exit(EXIT_USAGE) from None
    except Exception as exc:  # a bug: still one line, no traceback
        say(
            console,
            f"{type(exc).__name__}: {exc}; the ledger keeps what was done; "
            "run the same command to resume, and please report this",
            prefix="batcher: internal error: ",
            style="red",
        )
        raise typer.Exit(EXIT_INTERNAL) from None


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


@app.command()
def run(
    inputs: Annotated[list[Path], typer.Argument(help="Export files holding user IDs.")],
    config: ConfigOption = None,
    ledger: Annotated[
        Path | None, typer.Option(help="Ledger file (default: derived from inputs and tenant).")
    ] = None,
    column: Annotated[str | None, typer.Option(help="Name of the ID column.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; send nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Skip the confirmation prompt.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")
    ] = False,
) -> None:
    """Confirm the users in INPUTS compromised; re-running the same command resumes."""
    resume = " ".join(["batcher", *map(_quote, sys.argv[1:])])
    with _exit_codes(resume):
        settings = load_settings(config)
        summary = run_job(
            settings,
            JobOptions(inputs=tuple(inputs), column=column, ledger=ledger, dry_run=dry_run),
            console,
        )
    render_summary(summary, console)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_json()) + "\n")
    raise typer.Exit(_exit_code(summary, resume))


def _exit_code(summary: Summary, resume: str) -> int:
    if summary.stopped:
        say(console, summary.stopped, prefix="batcher: error: ", style="red")
        say(console, f"to resume once fixed: {resume}")
        return EXIT_AUTH
    if summary.dry_run:
        return EXIT_OK
    if summary.unknown or summary.unsent:
        say(console, f"some IDs are unsure; to send them again: {resume}")
        return EXIT_SOME_FAILED
    if summary.failed or summary.failed_before:
        console.print("some IDs failed; see the ledger for Graph's error codes", highlight=False)
        return EXIT_SOME_FAILED
    return EXIT_OK


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
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8765,
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
