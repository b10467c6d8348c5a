"""What a command did, as data: the CLI renders it (report.py) and prints it as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from batcher.actions import Budget

if TYPE_CHECKING:
    import polars as pl

    from batcher.inputs import InputSet


@dataclass(frozen=True)
class ActionSummary:
    """One action's counts: the plan, then what this run did (steps = users x this action)."""

    name: str
    does: str  # what it does to users, for the gate
    undo: str | None  # the action that reverses it, None: it cannot be undone
    budget: Budget
    to_send: int
    requests: int  # at the least
    already_done: int = 0
    done_elsewhere: int = 0  # done by another recent run on this tenant
    failed_before: int = 0
    not_selected: int = 0  # a replay: failed or unknown, but not chosen by --only / --action
    skipped: int = 0
    done: int = 0
    failed: int = 0
    unknown: int = 0
    estimated_seconds: float = 0.0  # when its sends end at the least, from the start
    guarded: int = 0  # users the guards keep from it (protected, or held back)

    @property
    def not_sent(self) -> int:
        return max(0, self.to_send - self.done - self.failed - self.unknown)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["not_sent"] = self.not_sent
        data.pop("does")
        return data


@dataclass(frozen=True)
class Inputs:
    """What the inputs held (``rows = valid + duplicates + invalid + skipped``), and the look-up."""

    rows: int = 0
    valid: int = 0
    duplicates: int = 0
    invalid: int = 0
    skipped: int = 0  # entities of other kinds (hosts, IPs, files)
    looked_up: int = 0
    resolved: int = 0
    not_found: int = 0
    ambiguous: int = 0
    guests: int = 0
    not_looked_up: int = 0  # Graph did not answer in time: the same command looks them up again
    lookup_requests: int = 0  # done, or (dry run) about how many it takes
    users: int = 0  # distinct users acted on
    from_ledger: int = 0  # of looked_up: outcomes of the ledger's earlier look-up, no request

    @classmethod
    def of(cls, read: InputSet, lookups: pl.DataFrame, requests: int, users: int) -> Inputs:
        """The counts of what was read and of the look-up outcomes (LOOKUP_COLUMNS)."""
        outcomes = lookups.get_column("outcome").to_list() if lookups.height else []
        return cls(
            rows=read.rows,
            valid=read.valid,
            duplicates=read.duplicates,
            invalid=read.invalid,
            skipped=read.skipped,
            looked_up=lookups.height,
            resolved=outcomes.count("resolved"),
            not_found=outcomes.count("not_found"),
            ambiguous=outcomes.count("ambiguous"),
            guests=outcomes.count("guest"),
            not_looked_up=outcomes.count("not_looked_up"),
            lookup_requests=requests,
            users=users,
        )


@dataclass(frozen=True)
class GuardedUser:
    """A user the guards keep from some or all actions: ``verdict`` protected (no write at
    all) or held_back (no action that touches access); ``why``: the [safety] entry, the
    signed-in operator, or the privileged roles."""

    user_id: str
    name: str  # the UPN the look-up read, else the input's value
    verdict: str
    why: str
    roles: str | None = None


@dataclass(frozen=True)
class Summary:
    """The counts every run, replay and undo reports; the CLI turns it into a table and JSON."""

    command: str
    target: str
    tenant: str
    cloud: str
    api_version: str
    dry_run: bool
    inputs: Inputs
    actions: tuple[ActionSummary, ...]
    estimated_seconds: float
    users_to_act: int = 0  # distinct users with a step to send: the count the gate asks for
    users_in_reach: int = 0  # of them, those an action changing accounts reaches (the radius)
    requests: int = 0
    throttled: int = 0
    seconds: float = 0.0
    ledger: str | None = None
    ledger_exists: bool = False
    rejects: str | None = None
    report: str | None = None
    stopped: str | None = None
    unreachable: bool = False  # stopped because Graph could not be reached
    interrupted: bool = False
    notes: tuple[str, ...] = field(default=())  # said prominently: e.g. many invalid rows
    # For the gate (job/radius.py): the first users it names, and the tenant's primary domain
    users_named: tuple[str, ...] = ()
    primary_domain: str | None = None  # None: not read (below the threshold, or Graph refused)
    guarded: tuple[GuardedUser, ...] = ()  # protected and held-back users, with why

    @property
    def to_send(self) -> int:
        return sum(a.to_send for a in self.actions)

    @property
    def unknown(self) -> int:
        return sum(a.unknown for a in self.actions)

    @property
    def not_sent(self) -> int:
        return sum(a.not_sent for a in self.actions)

    @property
    def failed(self) -> int:
        return sum(a.failed + a.failed_before for a in self.actions)

    def to_json(self) -> dict[str, Any]:
        """What the run's log events and its record in the ledger hold: the inputs' counts,
        the steps' totals over every action, and each action's counts under ``actions``."""
        return {
            "command": self.command,
            "target": self.target,
            "tenant": self.tenant,
            "cloud": self.cloud,
            "api_version": self.api_version,
            "dry_run": self.dry_run,
            **asdict(self.inputs),
            "to_send": self.to_send,
            "done": sum(a.done for a in self.actions),
            "failed": self.failed,
            "unknown": self.unknown,
            "not_sent": self.not_sent,
            "estimated_seconds": self.estimated_seconds,
            "users_to_act": self.users_to_act,
            "requests": self.requests,
            "throttled": self.throttled,
            "seconds": self.seconds,
            "ledger": self.ledger,
            "ledger_exists": self.ledger_exists,
            "rejects": self.rejects,
            "report": self.report,
            "stopped": self.stopped,
            "interrupted": self.interrupted,
            "actions": {a.name: a.to_json() for a in self.actions},
        }

    def result(self) -> dict[str, Any]:
        """What --json prints of a run, replay or undo (batcher.cli.schema.SendResult): every
        action's counts under ``actions``, nothing about one action beside them."""
        return {
            "target": self.target,
            "tenant": self.tenant,
            "cloud": self.cloud,
            "api_version": self.api_version,
            "dry_run": self.dry_run,
            "inputs": asdict(self.inputs),
            "actions": {a.name: a.to_json() for a in self.actions},
            "users_to_act": self.users_to_act,
            "requests": self.requests,
            "throttled": self.throttled,
            "estimated_seconds": round(self.estimated_seconds, 1),
            "seconds": round(self.seconds, 1),
            "ledger": self.ledger,
            "ledger_exists": self.ledger_exists,
            "rejects": self.rejects,
            "report": self.report,
            "stopped": self.stopped,
            "unreachable": self.unreachable,
            "interrupted": self.interrupted,
            "notes": list(self.notes),
            "guarded": [asdict(g) for g in self.guarded],
        }


@dataclass(frozen=True)
class VerifySummary:
    """What verify read back, per action; ``not_read`` were not read (stopped or cut short)."""

    ledger: str
    report: str
    requests: int
    actions: dict[str, dict[str, int]]  # action -> {checked, as_expected, processing, ...}
    expected: dict[str, str]  # action -> what it expects, in words
    nothing_to_verify: str | None = None  # why there was nothing to read
    interrupted: bool = False

    def total(self, key: str) -> int:
        return sum(counts.get(key, 0) for counts in self.actions.values())

    def result(self) -> dict[str, Any]:
        """What --json prints of a verify (batcher.cli.schema.VerifyResult)."""
        return asdict(self)
