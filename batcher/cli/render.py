"""Tables and lines for people, on the console the CLI gives; only the CLI calls these."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from batcher.actions import ACTIONS, sent_after
from batcher.job.status import Status
from batcher.job.summary import ActionSummary, Summary, VerifySummary
from batcher.ledger import MEANING, StepState


def say(console: Console, message: str, *, prefix: str = "", style: str = "") -> None:
    """Print one line of plain text: brackets in paths or settings are never read as markup."""
    line = Text(prefix, style=style) + Text(message) if prefix else Text(message)
    console.print(line, highlight=False)


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def plural(n: int, word: str) -> str:
    """``1 request``, ``2 requests``, ``3 identities``."""
    if n == 1:
        return f"{n:,} {word}"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{n:,} {word[:-1]}ies"
    return f"{n:,} {word}s"


def where(summary: Summary) -> str:
    return f"tenant {summary.tenant} ({summary.cloud} cloud, Graph {summary.api_version})"


def what_each_does(summary: Summary) -> list[str]:
    """One line per action: how many users, what it does to them, whether it can be undone."""
    lines = []
    for action in summary.actions:
        undo = f"undo: batcher undo LEDGER ({action.undo})" if action.undo else "cannot be undone"
        lines.append(f"{action.name}: {plural(action.to_send, 'user')} {action.does}; {undo}")
    return lines


def render_plan(summary: Summary, console: Console) -> None:
    """What a command will do: its counts, requests, and how long within the budgets."""
    _tables(summary, console, sent=False, title=f"batcher {summary.command}: plan")
    for line in what_each_does(summary):
        say(console, line)
    requests = sum(a.requests for a in summary.actions)
    say(
        console,
        f"{where(summary)}: {plural(summary.to_send, 'step')} in at least "
        f"{plural(requests, 'request')}, about {format_duration(summary.estimated_seconds)} "
        "within the configured budgets",
    )
    timed = [a for a in summary.actions if a.to_send]
    if len(timed) > 1 or any(ACTIONS[a.name].lists for a in timed):
        slowest = max(timed, key=lambda a: a.estimated_seconds)
        ends = ", ".join(
            f"{a.name} {format_duration(a.estimated_seconds)} (on the {a.budget} budget"
            + ("; the slowest)" if a is slowest and a.estimated_seconds > 0 else ")")
            for a in timed
        )
        say(console, f"each action ends after about: {ends}")
    _notes(summary, console)


def render_summary(summary: Summary, console: Console) -> None:
    """A short table of what the command did, and where its files are."""
    if summary.dry_run:
        render_plan(summary, console)
        if summary.ledger:
            state = "exists" if summary.ledger_exists else "does not exist yet"
            say(console, f"ledger:  {summary.ledger} ({state})")
        else:  # only signing in tells the tenant, which names the ledger
            say(console, "ledger:  chosen at sign-in (named by the tenant signed in to)")
        say(console, "dry run: nothing was sent")
    else:
        _tables(summary, console, sent=True, title=f"batcher {summary.command}")
        say(console, f"{where(summary)}: took {format_duration(summary.seconds)}")
        for action in summary.actions:  # said again: what no undo will give back
            if action.done and action.undo is None:
                say(
                    console,
                    f"{action.name}: {plural(action.done, 'user')} {action.does}; cannot be undone",
                )
        _notes(summary, console)
        _went_ahead_of_failures(summary, console)
        if summary.ledger:
            say(console, f"ledger:  {summary.ledger}")
    if summary.rejects:
        say(console, f"rejects: {summary.rejects}")
    if summary.report:
        say(console, f"report:  {summary.report}")


def _went_ahead_of_failures(summary: Summary, console: Console) -> None:
    """Warn where an action failed for some users while what is sent after it went ahead (a
    disable refused, sessions revoked: the account stays enabled)."""
    done = {a.name for a in summary.actions if a.done}
    for action in summary.actions:
        warning = ACTIONS[action.name].warn_failed
        went = [a.name for a in sent_after(action.name) if a.name in done]
        if not (warning and action.failed and went):
            continue
        n = action.failed
        said = warning.format(
            accounts=plural(n, "account"), stay="it stays" if n == 1 else "they stay"
        )
        say(
            console,
            f"{said}, though {', '.join(went)} went ahead; see the note column of the report",
            prefix="warning: ",
            style="yellow",
        )


def _notes(summary: Summary, console: Console) -> None:
    for note in summary.notes:
        say(console, note, prefix="note: ", style="bold yellow")


def _tables(summary: Summary, console: Console, *, sent: bool, title: str) -> None:
    inputs = summary.inputs
    if summary.command == "run":
        table = Table(title=title)
        table.add_column("inputs", style="bold")
        table.add_column("count", justify="right")
        rows = [
            ("rows read", inputs.rows),
            ("valid values", inputs.valid),
            ("duplicates", inputs.duplicates),
            ("invalid (see rejects file)", inputs.invalid),
        ]
        if inputs.skipped:
            rows.append(("other entities skipped (hosts, IPs, ...)", inputs.skipped))
        if inputs.looked_up or inputs.lookup_requests:
            rows += [
                ("looked up in the directory", inputs.looked_up),
                ("resolved", inputs.resolved),
                ("not found (see rejects file)", inputs.not_found),
                ("ambiguous (see rejects file)", inputs.ambiguous),
                ("guests", inputs.guests),
                ("not looked up (Graph did not answer)", inputs.not_looked_up),
                ("look-up requests", inputs.lookup_requests),
            ]
        rows.append(("users", inputs.users))
        for label, value in rows:
            table.add_row(label, f"{value:,}")
        console.print(table)
        title = ""
    table = Table(title=title or None)
    table.add_column("steps", style="bold")
    for action in summary.actions:
        table.add_column(action.name, justify="right")
    for label, count in _action_rows(summary, sent):
        table.add_row(label, *(f"{count(a):,}" for a in summary.actions))
    console.print(table)
    if sent:
        say(
            console,
            f"{plural(summary.requests, 'request')}, {summary.throttled:,} throttled (429)",
        )


def _action_rows(summary: Summary, sent: bool) -> list[tuple[str, Callable[[ActionSummary], int]]]:
    rows: list[tuple[str, Callable[[ActionSummary], int]]] = [
        ("done earlier", lambda a: a.already_done),
        ("failed earlier (use replay)", lambda a: a.failed_before),
    ]
    if summary.command == "replay":
        rows.append(("not selected (other codes or actions)", lambda a: a.not_selected))
    if any(a.done_elsewhere for a in summary.actions):
        rows.append(("done by another recent run", lambda a: a.done_elsewhere))
    if any(a.skipped for a in summary.actions):
        rows.append(("skipped (guests)", lambda a: a.skipped))
    rows += [("to send", lambda a: a.to_send), ("requests (at least)", lambda a: a.requests)]
    if sent:
        rows += [
            ("done", lambda a: a.done),
            ("failed", lambda a: a.failed),
            ("unknown (re-sent on resume)", lambda a: a.unknown),
            ("not sent (sent on resume)", lambda a: a.not_sent),
        ]
    return rows


def render_verify(result: VerifySummary, console: Console) -> None:
    table = Table(title="batcher verify")
    table.add_column("users", style="bold")
    names = list(result.actions)
    for name in names:
        table.add_column(name, justify="right")
    checks = {name: ACTIONS[name].check for name in names}
    for key, label, word in (
        ("checked", "checked", lambda c: ""),
        ("as_expected", "as expected", lambda c: c.yes),
        ("processing", "still processing (normal for a while)", lambda c: ""),
        ("not_as_expected", "not as expected", lambda c: c.no),
        ("not_found", "no such user", lambda c: ""),
        ("not_read", "not read", lambda c: ""),
    ):
        cells = [
            f"{result.actions[n].get(key, 0):,} {word(checks[n])}".replace("_", " ").strip()
            for n in names
        ]
        table.add_row(label, *cells)
    console.print(table)
    for name in names:
        say(console, f"{name}: expects {result.expected[name]}")
    say(console, f"{plural(result.requests, 'read request')}; per user: {result.report}")


def render_status(status: Status, console: Console) -> None:
    meta = status.meta
    actions = ", ".join(status.counts)
    say(
        console,
        f"{status.path}: {actions} on tenant {meta.get('tenant')} "
        f"({meta.get('cloud')}, {meta.get('api_version')}); {plural(status.users, 'user')}",
    )
    if "undo_of" in meta:
        say(console, f"  the undo of {meta['undo_of']}")
    table = Table()
    table.add_column("state", style="bold")
    for action in status.counts:
        table.add_column(action, justify="right")
    table.add_column("meaning")
    for state in StepState:
        if state is StepState.SENDING and not status.live:
            continue  # outside a live run, what a kill left is shown as unknown or planned
        values = [status.counts[a].get(state.value, 0) for a in status.counts]
        table.add_row(state.value, *(f"{v:,}" for v in values), MEANING[state])
    console.print(table)
    if status.lookups:
        looked = ", ".join(f"{k} {v:,}" for k, v in sorted(status.lookups.items()))
        say(console, f"look-ups: {looked}")
    _last_run(status, console)


def _last_run(status: Status, console: Console) -> None:
    run = status.last_run
    if status.live:
        say(console, "a batcher is writing this ledger now", prefix="live: ", style="bold")
    if run is None:
        say(console, "no run recorded yet")
        return
    who = f"{run.get('os_user')}@{run.get('host')}"
    started = f"{run['command']} by {who}, started {run.get('started_at')}"
    if status.killed:
        say(
            console,
            f"{started}, ended without finishing (killed, or the machine stopped)",
            prefix="last run: ",
            style="yellow",
        )
        if status.resume:
            say(console, f"to resume: {status.resume}")
    elif not status.live:
        say(console, f"{started}, finished {run.get('finished_at')}", prefix="last run: ")
