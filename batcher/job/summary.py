"""What a command did, as data: the CLI renders it (report.py) and prints it as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from batcher.actions import ACTIONS, Budget, of_earlier_releases

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
    def risk(self) -> ActionSummary | None:
        """The action the keys of earlier releases describe (confirm, or dismiss for an undo),
        if any."""
        name = of_earlier_releases(a.name for a in self.actions)
        return next((a for a in self.actions if a.name == name), None)

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
        """Keys of earlier releases keep their meaning for confirm (or dismiss, in an undo);
        they are null when the command has neither: ``actions`` has every action's counts."""
        risk = self.risk
        legacy = {
            "already_done": risk.already_done if risk else None,
            "done_elsewhere": risk.done_elsewhere if risk else None,
            "failed_before": risk.failed_before if risk else None,
            "to_send": risk.to_send if risk else None,
            "batches": risk.requests if risk else None,
            "confirmed": risk.done if risk else None,
            "failed": risk.failed if risk else None,
            "unknown": risk.unknown if risk else None,
            "unsent": risk.not_sent if risk else None,
        }
        data: dict[str, Any] = {
            "command": self.command,
            "action": (risk or self.actions[0]).name if self.actions else None,
            "target": self.target,
            "tenant": self.tenant,
            "cloud": self.cloud,
            "api_version": self.api_version,
            "dry_run": self.dry_run,
            **asdict(self.inputs),
            **legacy,
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
        return data

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

    @property
    def risk_action(self) -> str | None:
        """The action the keys of earlier releases describe: confirm, or dismiss for an undo
        ledger; None when the ledger has neither."""
        return of_earlier_releases(self.expected)

    def to_json(self) -> dict[str, Any]:
        """Keys of earlier releases keep their meaning for the Identity Protection action alone
        (``confirmed``: as expected, so dismissed for a dismiss); null when there is none."""
        data = asdict(self)
        name = self.risk_action
        counts = self.actions.get(name, {}) if name else {}
        for key, count in LEGACY_VERIFY_KEYS.items():
            data[key] = counts.get(count, 0) if name else None
        data["action"] = name
        data["expected_state"] = str(ACTIONS[name].check.expect) if name else None
        return data

    def result(self) -> dict[str, Any]:
        """What --json prints of a verify (batcher.cli.schema.VerifyResult)."""
        return asdict(self)


# The keys verify's JSON had before actions were data, and the count each one is now.
LEGACY_VERIFY_KEYS = {
    "checked": "checked",
    "confirmed": "as_expected",
    "processing": "processing",
    "not_confirmed": "not_as_expected",
    "not_read": "not_read",
}
