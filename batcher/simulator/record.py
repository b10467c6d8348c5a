"""What the simulator saw and did, for tests to read (and /_simulator/record to show)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from batcher.actions import ACTIONS as BATCHER_ACTIONS
from batcher.actions import Read

# Identity Protection's actions (by the last part of their path) and the riskState each leaves.
ACTIONS = {
    action.path.rsplit("/", 1)[1]: action.check.expect
    for action in BATCHER_ACTIONS.values()
    if action.check.read is Read.RISKY_USER
}


class Write(NamedTuple):
    """One directory write the simulator received, with the status it answered."""

    op: str  # "disable", "enable", "reset" or "revoke"
    user_id: str  # the object ID (lower case), or the key in the URL when no user matched
    at: float  # when it was answered (Record.clock)
    status: int


@dataclass
class Record:
    """What the simulator saw and did; tests read it after a run.

    ``statuses``, ``answers`` and ``requests`` count the HTTP requests a client sent to Graph
    endpoints (a ``$batch`` is one); what happened inside a batch is in ``inner_statuses``.
    ``clock`` times ``answers`` and ``writes`` (the simulator's budget clock).
    """

    accepted: dict[str, list[str]] = field(default_factory=lambda: {a: [] for a in ACTIONS})
    risk_state: dict[str, str] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    answers: list[tuple[float, int]] = field(default_factory=list)  # (clock time, status)
    applied_at: dict[str, float] = field(default_factory=dict)
    reads: int = 0  # Identity Protection reads
    directory_reads: int = 0  # GET /users, /users/{key} and /organization, direct or in a batch
    tenant_reads: int = 0  # GET /organization: which tenant the token signs in to
    batches: int = 0  # POST $batch calls
    inner_requests: int = 0  # requests inside those batches
    inner_statuses: Counter[int] = field(default_factory=Counter)
    directory_faults: Counter[str] = field(default_factory=Counter)
    filters: list[str] = field(default_factory=list)  # every $filter received, decoded
    writes: list[Write] = field(default_factory=list)
    revoked_guests: list[str] = field(default_factory=list)  # guests asked to revoke sessions
    # (user_id, password, forceChangePasswordNextSignIn) of each reset, in memory only: tests
    # search every file and stream for them; never in to_json or an answer
    passwords: list[tuple[str, str, bool]] = field(default_factory=list, repr=False)
    changed: threading.Condition = field(default_factory=threading.Condition, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def apply(self, action: str, ids: list[str], state: str) -> None:
        with self.changed:
            for uid in ids:
                self.accepted[action].append(uid.lower())
                self.risk_state[uid.lower()] = state
                self.applied_at[uid.lower()] = time.monotonic()
            self.changed.notify_all()

    def wrote(self, op: str, user_id: str, status: int) -> None:
        with self.changed:
            self.writes.append(Write(op, user_id, self.clock(), status))
            self.changed.notify_all()

    def set_password(self, user_id: str, password: str, force: bool) -> None:
        with self.changed:
            self.passwords.append((user_id, password, force))
            self.changed.notify_all()

    def read(self) -> None:
        """One Identity Protection read passed the checks and the budget."""
        with self.changed:
            self.reads += 1
            self.changed.notify_all()

    def wait_for_reads(self, count: int, timeout: float) -> bool:
        """Block until ``count`` Identity Protection reads passed (True) or time runs out."""
        with self.changed:
            return self.changed.wait_for(lambda: self.reads >= count, timeout)

    def wait_for_accepted(self, action: str, count: int, timeout: float) -> bool:
        """Block until ``count`` IDs were accepted for ``action`` (True) or time runs out."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.accepted[action]) >= count, timeout)

    def wait_for_writes(self, op: str, count: int, timeout: float) -> bool:
        """Block until ``count`` writes of ``op`` succeeded (True) or time runs out."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.succeeded(op)) >= count, timeout)

    def succeeded(self, op: str) -> list[str]:
        """The user IDs that writes of ``op`` succeeded for (2xx), in order."""
        return [w.user_id for w in self.writes if w.op == op and 200 <= w.status < 300]

    def operations(self, user_id: str) -> list[str]:
        """The writes that succeeded for one user, in order, e.g. ["disable", "revoke"]."""
        uid = user_id.lower()
        return [w.op for w in self.writes if w.user_id == uid and 200 <= w.status < 300]

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + self.faults["reset"] + self.faults["lost"]

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "risk_state": self.risk_state,
            "statuses": _keyed(self.statuses),
            "faults": dict(self.faults),
            "requests": self.requests,
            "reads": self.reads,
            "directory_reads": self.directory_reads,
            "tenant_reads": self.tenant_reads,
            "batches": self.batches,
            "inner_requests": self.inner_requests,
            "inner_statuses": _keyed(self.inner_statuses),
            "directory_faults": dict(self.directory_faults),
            "filters": self.filters,
            "writes": [w._asdict() for w in self.writes],
            "revoked_guests": self.revoked_guests,
        }


def _keyed(counter: Counter[int]) -> dict[str, int]:
    return {str(k): v for k, v in counter.items()}
