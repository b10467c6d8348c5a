"""The evidence a run leaves: its comment on the incident (`run --comment`, `batcher comment`)
and the HTML report's rendering."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from batcher.actions import ACTIONS
from batcher.cli.edge import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    Outcome,
    as_typed,
    console,
    exit_codes,
    observers,
    settings_in_force,
)
from batcher.cli.help import Command, app
from batcher.cli.options import Config, Json, LedgerArg
from batcher.cli.render import say
from batcher.errors import ConfigError

if TYPE_CHECKING:  # the rest is imported where used: `batcher --help` loads no httpx or polars
    from batcher.job.comment import Commented
    from batcher.job.setup import Job


@app.command("comment", cls=Command)
def comment_command(
    ledger: LedgerArg,
    incident: Annotated[
        str, typer.Option(metavar="ID", help="The Defender XDR incident to comment on.")
    ],
    config: Config = None,
    as_json: Json = False,
) -> None:
    """Comment on INCIDENT what LEDGER did (counts per action, run ID), once."""
    from batcher.cli.jobs import build_job, closing
    from batcher.job.comment import CommentFailed, check_incident, comment
    from batcher.job.ledgers import recorded_actions

    output = Outcome("comment", as_json)
    with exit_codes(output), observers(None) as watch:
        settings = settings_in_force(config)
        check_incident(incident)
        actions = tuple(ACTIONS[a] for a in recorded_actions(ledger))
        job = build_job(settings, actions, ledger, (), watch, yes=True)
        with closing(job):
            try:
                done = comment(job, ledger, incident)
            except CommentFailed as exc:
                say(console, str(exc), prefix="batcher: error: ", style="red")
                output.finish(EXIT_SOME_FAILED, None, str(exc))
                raise typer.Exit(EXIT_SOME_FAILED) from None
    say(console, _said(done))
    output.finish(EXIT_OK, done.result())


def comment_on(post_comment: bool, incident: str | None) -> str | None:
    """The incident to comment on after the run; None: no comment asked for."""
    from batcher.job.comment import check_incident

    if not post_comment:
        return None
    if incident is None:
        raise ConfigError("--comment needs --incident ID: the incident to comment on")
    return check_incident(incident)


def commented(job: Job, ledger: Path, incident: str) -> str:
    """The note a run ends with: what became of its comment on the incident."""
    from batcher.job.comment import CommentFailed, comment

    try:
        done = comment(job, ledger, incident)
    except CommentFailed as exc:
        later = as_typed("comment", str(ledger), "--incident", incident)
        return f"{exc}; to post it later: {later}"
    return _said(done)


def _said(done: Commented) -> str:
    if done.posted:
        ids = f"; request-id {done.request_id}" if done.request_id else ""
        return f"incident {done.incident}: comment posted (run {done.run_id}{ids})"
    where = "the ledger records it" if done.already == "ledger" else "found on the incident"
    return f"incident {done.incident}: the comment of run {done.run_id} is already there ({where})"


def evidence_report(ledger: Path, out: Path, output: Outcome) -> None:
    """`batcher report LEDGER --out report.html`: the evidence page, and its counts said."""
    from batcher.job.evidence import evidence_page
    from batcher.report.files import check_out_folder, write_report
    from batcher.report.html import render_html

    with exit_codes(output):
        check_out_folder(out)
        page = evidence_page(ledger)
        write_report(render_html(page), out)
    counts = {a: {k: n for k, n in per.items() if n} for a, per in page.counts.items()}
    output.finish(EXIT_OK, {"out": str(out), "steps": page.users.height, "counts": counts})
    said = "; ".join(
        f"{a}: " + ", ".join(f"{k} {n:,}" for k, n in per.items()) for a, per in counts.items()
    )
    say(console, f"{out}: {page.users.height:,} steps ({said})")
