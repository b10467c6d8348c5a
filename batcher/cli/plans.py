"""The two-person path: `batcher plan` writes the plan, `show` prints it, `apply` does it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from batcher.actions import ACTIONS, CONTAIN, choose
from batcher.cli.edge import (
    EXIT_OK,
    Outcome,
    as_typed,
    console,
    exit_codes,
    observers,
    settings_in_force,
)
from batcher.cli.help import Command, app
from batcher.cli.options import (
    ActionNames,
    Column,
    Config,
    Contain,
    IncludeAdmins,
    Json,
    LogFile,
    MaxUsers,
    Sheet,
    yes_option,
)
from batcher.cli.render import plural, render_plan, say
from batcher.platform import on_stop_signals

if TYPE_CHECKING:
    from batcher.config import Settings
    from batcher.eventlog import Observer
    from batcher.job.setup import Job

PlanArg = Annotated[Path, typer.Argument(metavar="PLAN", help="A plan `batcher plan` wrote.")]


@app.command("plan", cls=Command)
def plan_command(
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT", help="Exports listing users.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="FILE", help="The plan file to write (.json).")
    ],
    config: Config = None,
    column: Column = None,
    sheet: Sheet = None,
    action: ActionNames = None,
    contain: Contain = False,
    resend: Annotated[
        bool, typer.Option("--resend", help="Plan what another recent run already did.")
    ] = False,
    include_admins: IncludeAdmins = False,
    log_file: LogFile = None,
) -> None:
    """Read INPUT..., look the users up, read the guards and write the exact plan to --out
    (each user's verdict: act, protected, held_back); no write is sent. A second person
    reviews it (`batcher show`), then `batcher apply` does exactly it."""
    from batcher.cli.jobs import build_job, closing
    from batcher.job.run import RunOptions
    from batcher.job.staged import ledger_of, plan
    from batcher.report.files import check_out_folder

    output = Outcome("plan")
    with exit_codes(output), observers(log_file) as watch:
        settings = settings_in_force(config)
        check_out_folder(out)
        actions = choose([*(action or []), *(CONTAIN if contain else ())])
        job = build_job(settings, actions, ledger_of(out), inputs, watch, yes=True)
        options = RunOptions(
            tuple(inputs), column, sheet, resend=resend, include_admins=include_admins
        )
        with closing(job), on_stop_signals(output.on_signal(job.stop.ask)):
            planned = plan(job, options, out)
    render_plan(planned.summary, console)
    verdicts = Counter(u["verdict"] for u in planned.content["users"])
    say(
        console,
        f"plan:    {out} ({plural(len(planned.content['users']), 'user')}: "
        + ", ".join(f"{n:,} {v}" for v, n in sorted(verdicts.items()))
        + f"); digest {planned.content['digest'][:16]}",
    )
    say(console, "nothing was sent; have it reviewed: " + as_typed("show", str(out)))
    say(
        console, "then: " + as_typed("apply", str(out), *(["--config", str(config)] * bool(config)))
    )
    raise typer.Exit(EXIT_OK)


@app.command("show", cls=Command)
def show_command(plan_file: PlanArg) -> None:
    """Print PLAN for review: who made it and when, its digest, and every user with why."""
    from batcher.job import planfile
    from batcher.job.staged import origin

    with exit_codes(Outcome("show")):
        loaded = planfile.load(plan_file)
    content = loaded.content
    now = datetime.now(UTC)
    lines = [
        origin(loaded, now) + " (digest verified: not edited since)",
        f"tenant {content['tenant']} ({content['cloud']} cloud, Graph {content['api_version']})",
        f"actions: {', '.join(loaded.actions)}; config digest {content['config_digest'][:16]}",
    ]
    verdicts = Counter(u["verdict"] for u in loaded.records())
    lines.append(
        f"{plural(len(loaded.records()), 'user')}: "
        + ", ".join(f"{n:,} {v}" for v, n in sorted(verdicts.items()))
    )
    for user in loaded.records():
        steps = ", ".join(f"{a}: {fate}" for a, fate in user["steps"].items())
        roles = f" roles {', '.join(user['roles'])};" if user["roles"] else ""
        before = ", ".join(f"{k} {v}" for k, v in user["before"].items())
        lines.append(
            f"{user['verdict']:<9} {user['upn'] or user['input_value']} ({user['user_id']}): "
            f"{user['why']};{roles} before: {before}; {steps}"
        )
    typer.echo("\n".join(lines))


@app.command("apply", cls=Command)
def apply_command(
    plan_file: PlanArg,
    config: Config = None,
    yes: Annotated[bool, yes_option("for scripts")] = False,
    max_users: MaxUsers = None,
    as_json: Json = False,
    log_file: LogFile = None,
) -> None:
    """Do exactly PLAN: its users, no input read again; refused if it was edited, is for
    another tenant or is too old. The guards are read again: a user protected since the plan
    gets no write. Running the same apply again resumes it."""
    from batcher.cli.jobs import Consent, build_job, send_job
    from batcher.job import planfile
    from batcher.job.staged import apply, ledger_of

    loaded = planfile.Loaded(plan_file, {})

    def build(settings: Settings, watch: Observer) -> Job:
        nonlocal loaded
        loaded = planfile.load(plan_file)  # an edited plan is refused before any request
        actions = tuple(ACTIONS[a] for a in loaded.actions)
        ledger = ledger_of(plan_file)
        return build_job(settings, actions, ledger, (), watch, yes=Consent(yes, max_users))

    send_job("apply", config, (as_json, log_file), build, lambda job: apply(job, loaded))
