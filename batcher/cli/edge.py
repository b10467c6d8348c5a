"""The CLI's edge: exit codes and one-line errors, the gate, what the console shows, signals."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from batcher.cli.progress import RunProgress
from batcher.cli.render import plural, render_plan, say, what_each_does, where
from batcher.config import Settings, SimulatorSettings, load_settings
from batcher.errors import AuthError, BatcherError, NotConfirmed, Unreachable, first_leaf
from batcher.eventlog import Event, EventLog, Fanout, Observer
from batcher.job.summary import Summary
from batcher.platform import command_line, program, read_line

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERNAL = 4
EXIT_UNREACHABLE = 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
_ERROR_NAMES: dict[int, Any] = {
    1: "some_failed",
    2: "usage",
    3: "auth",
    4: "internal",
    5: "unreachable",
    130: "interrupted",
    143: "terminated",
}  # any other 128 + N (a stop signal of Windows): "interrupted"
GATE_TRIES = 3

console = Console(stderr=True, soft_wrap=True)


CONFIG_HERE = "config.toml"  # used when present and no --config is given, as `make run` does


def config_in_force(given: Path | None) -> Path | None:
    """The config in force: --config, else ./config.toml when there is one (as make does)."""
    if given is not None:
        return given
    here = Path(CONFIG_HERE)
    return here if here.is_file() else None


def settings_in_force(given: Path | None) -> Settings:
    """Load the config in force and say, first of all, which it is and where it sends."""
    path = config_in_force(given)
    settings = load_settings(path)
    say(console, f"config: {path if path else 'none'}; target: {target_of(settings)}")
    return settings


def target_of(settings: Settings) -> str:
    """Where a command with these settings sends, in words."""
    graph = settings.graph
    if graph.target == "simulator":
        return "the built-in Graph simulator (no real tenant)"
    where = graph.base_url or f"Microsoft Graph ({graph.cloud} cloud)"
    return f"{where}, tenant {settings.auth.tenant_id}" if settings.auth.tenant_id else where


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


class Outcome:
    """What one command tells at its end: the exit code and, with --json, the one JSON line
    (batcher.cli.schema). It also keeps what the error path needs: the ledger once known (an
    internal error says whether it holds any work) and the stop signal that came first."""

    def __init__(self, command: str, as_json: bool = False) -> None:
        self.command = command
        self.as_json = as_json
        self.ledger: Path | None = None
        self.signal: int | None = None

    def on_signal(self, ask: Callable[[], None]) -> Callable[[int], None]:
        """A stop-signal handler: remembers the first signal, then asks the job to stop."""

        def handler(signum: int) -> None:
            if self.signal is None:
                self.signal = signum
            ask()

        return handler

    @property
    def stopped_code(self) -> int:
        """128 + the signal, as shells say it: 130 after Ctrl-C (SIGINT), 143 after a
        termination request (SIGTERM)."""
        return 128 + self.signal if self.signal else EXIT_INTERRUPTED

    def finish(self, code: int, result: dict[str, Any] | None, message: str | None = None) -> None:
        """Print the JSON line (with --json); ``message`` says why the code is not 0."""
        if not self.as_json:
            return
        from batcher.cli.schema import ErrorInfo, envelope  # its models: only with --json

        name = _ERROR_NAMES.get(code, "interrupted")
        error = ErrorInfo(code=name, message=message or "") if code else None
        sys.stdout.write(envelope(self.command, code, result, error) + "\n")
        sys.stdout.flush()


@contextmanager
def exit_codes(out: Outcome, resume: str | None = None) -> Iterator[None]:
    """The only place errors become exit codes and one-line messages (and, with --json, the
    JSON envelope on stdout, so a script always gets one)."""
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, typer.Exit | SystemExit):
            raise
        code, message = describe_error(first_leaf(exc), resume, out.ledger)
        stopped = code == EXIT_INTERRUPTED
        code = out.stopped_code if stopped else code
        label = "" if stopped else "internal error: " if code == EXIT_INTERNAL else "error: "
        say(console, message, prefix=f"batcher: {label}", style="" if stopped else "red")
        out.finish(code, None, message)
        raise typer.Exit(code) from None


def describe_error(
    exc: BaseException, resume: str | None, ledger: Path | None = None
) -> tuple[int, str]:
    """The exit code and the message (without its ``error:`` label) of an error."""
    if isinstance(exc, KeyboardInterrupt):
        hint = f"; to resume: {resume}" if resume else ""
        return EXIT_INTERRUPTED, f"interrupted; the ledger keeps everything done so far{hint}"
    if isinstance(exc, Unreachable):
        return EXIT_UNREACHABLE, str(exc)
    if isinstance(exc, BatcherError):
        return (EXIT_AUTH if isinstance(exc, AuthError) else EXIT_USAGE), str(exc)
    if isinstance(exc, OSError):
        where_ = f"{exc.filename}: " if exc.filename else ""
        return EXIT_USAGE, f"{where_}{exc.strerror or exc}"
    bug = f"{type(exc).__name__}: {exc}"  # a bug: still one line, no traceback
    if ledger is not None and _holds_work(ledger):
        return EXIT_INTERNAL, (
            f"{bug}; the ledger {ledger} keeps what was done; run the same command to resume, "
            "and please report this"
        )
    return EXIT_INTERNAL, f"{bug}; no step was recorded as sent; please report this"


def _holds_work(ledger: Path) -> bool:
    """Whether the ledger records any step past 'planned' (sent, settled or skipped)."""
    from batcher.ledger import Ledger

    try:
        reader = Ledger.open_existing(ledger)
    except Exception:  # unreadable: it shows no work
        return False
    try:
        counts = reader.counts()
    except Exception:
        return False
    finally:
        reader.close()
    return any(n for per in counts.values() for state, n in per.items() if state != "planned")


def gate(
    simulated: bool, yes: bool, confirm_over: int, max_users: int | None = None
) -> Callable[[Summary], bool]:
    """Before any real send: show the blast radius and make the operator type the count (and,
    above ``confirm_over`` users that an action changing accounts reaches, the tenant's primary
    domain). --yes alone is refused above ``confirm_over`` such users; --max-users N refuses a
    plan of more than N users, on any target."""

    def confirm(plan: Summary) -> bool:
        users = plan.users_to_act
        if max_users is not None and users > max_users:
            raise NotConfirmed(
                f"refusing to send: the plan holds {plural(users, 'user')}, more than --max-users "
                f"{max_users}; nothing was sent; check the plan, then raise --max-users if that "
                "many is meant"
            )
        if simulated:
            return True
        big = plan.users_in_reach > confirm_over  # confirming risk alone is not in the radius
        if yes:
            if big and max_users is None:
                raise NotConfirmed(
                    f"refusing --yes alone for {plural(users, 'user')}: more than [safety] "
                    f"confirm_over = {confirm_over}; nothing was sent; add --max-users {users} "
                    "to agree to at most that many, or answer the prompt at a terminal"
                )
            return True
        if not sys.stdin.isatty():
            raise NotConfirmed(
                "refusing to send without confirmation: there is no terminal to ask on; "
                "check the plan with --dry-run, then pass --yes"
            )
        render_plan(plan, console)
        say(console, f"About to act on {plural(users, 'user')} on {where(plan)}:", style="bold red")
        for line in what_each_does(plan):
            say(console, f"  {line}", style="bold red")
        if not big:
            for line in _named(plan):
                say(console, f"  {line}", style="bold")
            return _asked(
                f"Type {users} (the number of users) or yes to go on: ", str(users), "yes"
            )
        if not _asked(f"Type {users} (the number of users) to go on: ", str(users)):
            return False
        domain = plan.primary_domain
        what = "the tenant's primary domain" if domain else "the tenant ID"
        expected = (domain or plan.tenant).lower()
        return _asked(f"Type {what} ({expected}) to go on: ", expected)

    return confirm


def _named(plan: Summary) -> list[str]:
    """The users the gate names (up to 20), and how many more there are."""
    if not plan.users_named:
        return []
    more = plan.users_to_act - len(plan.users_named)
    tail = [f"... and {plural(more, 'more user')}"] if more > 0 else []
    return ["users:", *(f"  {name}" for name in plan.users_named), *tail]


def _asked(prompt: str, expected: str, *also: str) -> bool:
    """Ask up to GATE_TRIES times; True once the answer is ``expected`` (or one of ``also``)."""
    for tries_left in range(GATE_TRIES - 1, -1, -1):
        try:
            answer = read_line(
                prompt, lambda text: console.print(text, end="", highlight=False, markup=False)
            )
        except EOFError:
            return False
        if answer.strip().lower().replace(",", "") in {expected, *also}:
            return True
        if tries_left:
            say(console, f"that is not {expected}; {plural(tries_left, 'try')} left")
    return False


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
            Event.REPORT_NOT_WRITTEN,
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
