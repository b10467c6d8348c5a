"""What the commands share: building a Job, closing what it opened, and the end of a send."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import typer

from batcher.actions import Action
from batcher.calls import StopSignal
from batcher.cli.edge import (
    EXIT_AUTH,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_UNREACHABLE,
    Outcome,
    as_typed,
    built_in_simulator,
    console,
    device_code_prompt,
    exit_codes,
    gate,
    observers,
    settings_in_force,
    this_command,
)
from batcher.cli.render import plural, render_summary, say
from batcher.config import Settings
from batcher.eventlog import Observer
from batcher.job.ledgers import default_path
from batcher.job.setup import Job, run_scope, tokens_for
from batcher.job.summary import Summary
from batcher.platform import on_stop_signals


def send_job(
    name: str,
    config: Path | None,
    output: tuple[bool, Path | None],
    build: Callable[[Settings, Observer], Job],
    work: Callable[[Job], Summary],
) -> None:
    """What run, replay and undo share: errors become exit codes; the console, the progress
    bar and the log file watch; Ctrl-C reaches the job; the summary is rendered."""
    as_json, log_file = output
    out = Outcome(name, as_json)
    resume = this_command()  # it looks batcher up on PATH: once
    with exit_codes(out, resume), observers(log_file) as watch:
        job = replace(build(settings_in_force(config), watch), command_line=resume)  # to resume it
        out.ledger = job.ledger
        with closing(job), on_stop_signals(out.on_signal(job.stop.ask)):
            summary = work(job)
    finish(summary, out, config, resume)


class Consent(NamedTuple):
    """What the operator agreed to on the command line: --yes, and --max-users N."""

    yes: bool
    max_users: int | None = None


def build_job(
    settings: Settings,
    actions: tuple[Action, ...],
    ledger: Path | None,
    inputs: Sequence[Path | str],
    observer: Observer,
    *,
    yes: bool | Consent,
    offline: bool = False,
) -> Job:
    """``inputs``: the files, and (as text) the sources read from Graph: the default ledger
    is named after them."""
    tokens = tokens_for(settings, offline=offline, prompt=device_code_prompt)
    who = run_scope(settings, tokens, actions)
    if ledger is None and inputs and who.tenant:
        files = [p for p in inputs if isinstance(p, Path)]
        sources = [s for s in inputs if isinstance(s, str)]
        ledger = default_path(settings, files, who, sources)
    job = Job(settings, who, tokens, ledger, observer, stop=StopSignal())
    job = replace(job, start_simulator=built_in_simulator)
    consent = yes if isinstance(yes, Consent) else Consent(yes)
    over = settings.safety.confirm_over
    asks = None if job.simulated or consent.yes else over  # the gate asks the domain above it
    confirm = gate(job.simulated, consent.yes, over, consent.max_users)
    return replace(job, confirm=confirm, asks_domain_over=asks)


@contextlib.contextmanager
def closing(job: Job) -> Iterator[Job]:
    """The job, its token source (which ``_job`` signed in with) closed at the end."""
    try:
        yield job
    finally:
        if job.tokens is not None:
            job.tokens.close()


def finish(summary: Summary, out: Outcome, config: Path | None, resume: str) -> None:
    render_summary(summary, console)
    if summary.target == "simulator" and not summary.dry_run:
        say(
            console,
            "this was the built-in simulator; no real tenant was touched",
            prefix="SIMULATOR: ",
            style="bold magenta",
        )
    code, message = exit_code_of(summary, out, config, resume)
    out.finish(code, summary.result(), message)
    raise typer.Exit(code)


def exit_code_of(
    summary: Summary, out: Outcome, config: Path | None, resume: str
) -> tuple[int, str | None]:
    """The exit code, and what the console said of it (the JSON error's message)."""
    if summary.stopped:
        say(console, summary.stopped, prefix="batcher: error: ", style="red")
        say(console, f"to resume once fixed: {resume}")
        return (EXIT_UNREACHABLE if summary.unreachable else EXIT_AUTH), summary.stopped
    if summary.interrupted:
        said = f"interrupted; everything done so far is in the ledger; to resume: {resume}"
        say(console, said)
        return out.stopped_code, said
    if summary.dry_run:
        return EXIT_OK, None
    pending = summary.unknown + summary.not_sent
    if pending or summary.inputs.not_looked_up:
        what = [plural(pending, "step") + " unknown or not sent"] if pending else []
        if summary.inputs.not_looked_up:
            what.append(plural(summary.inputs.not_looked_up, "identity") + " not looked up")
        said = f"{' and '.join(what)}; to send them again: {resume}"
        say(console, said)
        return EXIT_SOME_FAILED, said
    if summary.failed:
        replay_cmd = as_typed(
            "replay", summary.ledger or "LEDGER", *(["--config", str(config)] if config else [])
        )
        said = (
            f"{plural(summary.failed, 'step')} failed; the report has Graph's error codes and "
            f"why; once the cause is fixed: {replay_cmd}"
        )
        say(console, said)
        return EXIT_SOME_FAILED, said
    return EXIT_OK, None
