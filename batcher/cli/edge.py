"""The CLI's edge: exit codes and one-line errors, the gate, what the console shows, signals."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from batcher.cli.progress import RunProgress
from batcher.cli.render import plural, render_plan, say, what_each_does, where
from batcher.config import SimulatorSettings
from batcher.errors import AuthError, BatcherError, NotConfirmed, Unreachable, first_leaf
from batcher.eventlog import Event, EventLog, Fanout, Observer
from batcher.job import Summary
from batcher.platform import command_line, program, read_line

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERNAL = 4
EXIT_UNREACHABLE = 5
EXIT_INTERRUPTED = 130
GATE_TRIES = 3

console = Console(stderr=True, soft_wrap=True)


def device_code_prompt(message: str) -> None:
    """Where to sign in with the device code: on stderr (stdout may carry JSON)."""
    say(console, message, prefix="batcher: ", style="bold")


@contextmanager
def built_in_simulator(settings: SimulatorSettings) -> Iterator[str]:
    """The built-in Graph simulator on a loopback port while a command runs; yields its URL."""
    from batcher.simulator import GraphSimulator, RunningSimulator

    with RunningSimulator(GraphSimulator(settings)) as sim:
        yield sim.url


def this_command() -> str:
    """This command line, as it will work when pasted: how batcher was started, then the args."""
    return command_line([*program(), *sys.argv[1:]])


def as_typed(*args: str) -> str:
    return command_line([*program(), *args])


@contextmanager
def exit_codes(resume: str | None = None, as_json: bool = False) -> Iterator[None]:
    """The only place errors become exit codes and one-line messages (and, with --json, a
    JSON object on stdout, so a script always gets one)."""
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, typer.Exit | SystemExit):
            raise
        code, message = describe_error(first_leaf(exc), resume)
        say(console, message, prefix="batcher: ", style="red" if code != EXIT_INTERRUPTED else "")
        if as_json:
            sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
        raise typer.Exit(code) from None


def describe_error(exc: BaseException, resume: str | None) -> tuple[int, str]:
    if isinstance(exc, KeyboardInterrupt):
        hint = f"; to resume: {resume}" if resume else ""
        return EXIT_INTERRUPTED, f"interrupted; the ledger keeps everything done so far{hint}"
    if isinstance(exc, Unreachable):
        return EXIT_UNREACHABLE, f"error: {exc}"
    if isinstance(exc, BatcherError):
        return (EXIT_AUTH if isinstance(exc, AuthError) else EXIT_USAGE), f"error: {exc}"
    if isinstance(exc, OSError):
        where_ = f"{exc.filename}: " if exc.filename else ""
        return EXIT_USAGE, f"error: {where_}{exc.strerror or exc}"
    return EXIT_INTERNAL, (  # a bug: still one line, no traceback
        f"internal error: {type(exc).__name__}: {exc}; the ledger keeps what was done; "
        "run the same command to resume, and please report this"
    )


def gate(simulated: bool, yes: bool) -> Callable[[Summary], bool]:
    """Before any real send: show the blast radius and make the operator type the count."""

    def confirm(plan: Summary) -> bool:
        if simulated or yes:
            return True
        if not sys.stdin.isatty():
            raise NotConfirmed(
                "refusing to send without confirmation: there is no terminal to ask on; "
                "check the plan with --dry-run, then pass --yes"
            )
        render_plan(plan, console)
        users = plan.users_to_act
        say(console, f"About to act on {plural(users, 'user')} on {where(plan)}:", style="bold red")
        for line in what_each_does(plan):
            say(console, f"  {line}", style="bold red")
        for tries_left in range(GATE_TRIES - 1, -1, -1):
            try:
                answer = read_line(
                    f"Type {users} (the number of users) or yes to go on: ",
                    lambda text: console.print(text, end="", highlight=False, markup=False),
                )
            except EOFError:
                return False
            if answer.strip().lower().replace(",", "") in {str(users), "yes"}:
                return True
            if tries_left:
                say(console, f"that is not {users}; {plural(tries_left, 'try')} left")
        return False

    return confirm


class ConsoleEvents:
    """What the console shows of a command's events (the library never prints)."""

    # Left to others: the progress bar (sending, progress, sent), the --log-file (requests,
    # states, look-ups, the run's start and end), the exit message (declined).
    IGNORED = frozenset(
        {
            Event.SENDING,
            Event.PROGRESS,
            Event.SENT,
            Event.REQUEST,
            Event.STATE,
            Event.LOOKUP,
            Event.RUN_STARTED,
            Event.RUN_FINISHED,
            Event.DECLINED,
        }
    )

    def __init__(self) -> None:
        self.shows: dict[Event, Callable[..., None]] = {
            Event.INPUTS: self._inputs,
            Event.LEDGER: self._ledger,
            Event.SIMULATOR: self._simulator,
            Event.LOOKING_UP: self._looking_up,
            Event.UNREACHABLE: self._unreachable,
            Event.STOPPING: self._stopping,
        }

    def __call__(self, event: Event, **fields: Any) -> None:
        event = Event(event)  # a name that is no event is refused, not dropped
        if event not in self.IGNORED:
            self.shows[event](**fields)

    def _inputs(self, files: Any, warnings: Any) -> None:
        for item in files:
            read = f", read as {item.format}" if item.format else ""
            column = f"column {item.column!r} ({item.column_reason})"
            say(console, f"{item.path}: {item.rows:,} rows{read}; {column}")
        for warning in warnings:
            say(console, warning, prefix="warning: ", style="yellow")

    def _ledger(self, path: str, exists: bool) -> None:
        say(console, f"ledger: {path}" + ("" if exists else " (new)"))

    def _simulator(self, url: str) -> None:
        say(
            console,
            f"sending to the built-in Graph simulator at {url}; no real tenant is touched",
            prefix="SIMULATOR: ",
            style="bold magenta",
        )

    def _looking_up(self, identities: int) -> None:
        say(console, f"looking up {plural(identities, 'identity')} in the directory (read-only)")

    def _unreachable(self, host: str, cause: str, advice: str, stop_after: float) -> None:
        going = f"stopping unless it answers within {stop_after:g}s" if stop_after else "stopping"
        say(
            console,
            f"cannot reach {host}: {cause}; {going}; {advice}",
            prefix="warning: ",
            style="bold yellow",
        )

    def _stopping(self, first: bool, in_flight: int, grace: float) -> None:
        if not first:
            say(console, "now; requests without an answer stay unknown", prefix="stopping: ")
        elif in_flight:
            say(
                console,
                f"no new requests; waiting up to {grace:g}s for the {plural(in_flight, 'request')} "
                "in flight (press Ctrl-C again to stop at once)",
                prefix="stopping: ",
                style="yellow",
            )
        else:
            say(console, "no new requests; none is in flight", prefix="stopping: ", style="yellow")


@contextmanager
def observers(log_file: Path | None) -> Iterator[Observer]:
    """The console, the progress bar and, with --log-file, the JSON-lines log."""
    watchers: list[Observer] = [ConsoleEvents(), RunProgress(console)]
    if log_file is None:
        yield Fanout(*watchers)
        return
    with closing(EventLog(log_file)) as log:
        yield Fanout(log, *watchers)
