"""The ledger's state machine: step and batch states, the named state sets, what a run is about."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from batcher.errors import LedgerError


class StepState(StrEnum):
    """Where one user's step (one action for one user) stands.

    planned -> sending -> done | failed | unknown; skipped when the action does not apply.
    """

    PLANNED = "planned"  # not sent yet, or every answer said Graph did not apply it
    SENDING = "sending"  # a request carrying it may have left; its run is live (or was killed)
    DONE = "done"  # Graph applied it
    FAILED = "failed"  # Graph refused it for good (a 4xx for this user or this request)
    UNKNOWN = "unknown"  # it may have been applied: a request got no answer, or a 5xx
    SKIPPED = "skipped"  # the action does not apply to this user (a guest, say)


class ItemState(StrEnum):
    """Where one child item (an authentication method, an inbox rule) of a list-then-act step
    stands: listed as planned or kept, then sending -> done | gone | failed | unknown."""

    PLANNED = "planned"  # listed, to be acted on
    SENDING = "sending"  # its request may have left
    DONE = "done"  # Graph applied it
    GONE = "gone"  # someone else removed it first (404): nothing left to do
    FAILED = "failed"  # Graph refused it for good
    UNKNOWN = "unknown"  # may have been applied (no answer, or a 5xx)
    KEPT = "kept"  # listed and left as it is, for the reason recorded


ITEM_TO_SEND = frozenset({ItemState.PLANNED, ItemState.SENDING, ItemState.UNKNOWN})
ITEM_SETTLED = frozenset(
    {ItemState.DONE, ItemState.GONE, ItemState.FAILED, ItemState.UNKNOWN, ItemState.KEPT}
)


class BatchState(StrEnum):
    """Where one request's group of steps stands; ``split`` after a 400 halved it."""

    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SPLIT = "split"
    RELEASED = "released"  # its steps went back to the queue (retried in another request)


# The named sets. A run sends TO_SEND; replay sends REPLAYABLE; undo reverses UNDOABLE.
TO_SEND = frozenset({StepState.PLANNED, StepState.SENDING, StepState.UNKNOWN})
REPLAYABLE = frozenset({StepState.FAILED, StepState.UNKNOWN, StepState.SENDING})
UNDOABLE = frozenset({StepState.DONE, StepState.UNKNOWN})
SETTLED = frozenset({StepState.DONE, StepState.FAILED, StepState.UNKNOWN, StepState.SKIPPED})

SENDABLE = TO_SEND | REPLAYABLE  # a request may carry a step in these states (run or replay)
IN_FLIGHT = frozenset({StepState.SENDING})  # only these take an attempt's answer


class IllegalTransition(LedgerError):
    """A named transition was asked of a step it may not move (a bug: nothing was written)."""


@dataclass(frozen=True)
class Move:
    """One named transition of steps: ``UPDATE steps SET {sets} WHERE {where}``, allowed only
    for steps in ``from_``; every step ``where`` names must be in one of them."""

    name: str
    sets: str
    where: str
    from_: frozenset[StepState] | frozenset[ItemState]
    table: str = "steps"  # or "items": a list-then-act step's child items


def move(
    db: sqlite3.Connection,
    step: Move,
    rows: Sequence[tuple[Sequence[object], Sequence[object]]],
    *,
    expect: int | None = None,
) -> int:
    """Apply ``step`` to each (SET parameters, WHERE parameters) in ``rows``; returns how many
    steps it changed, which must be every step ``where`` names (``expect`` of them when the
    caller knows). Else IllegalTransition, and the transaction rolls back: it names a step in
    a state it may not leave that way, or says how many steps were missing."""
    allowed = sorted(step.from_)
    marks = ", ".join("?" * len(allowed))
    update = f"UPDATE {step.table} SET {step.sets} WHERE ({step.where}) AND state IN ({marks})"
    if expect is None:
        count = f"SELECT COUNT(*) FROM {step.table} WHERE {step.where}"
        expect = sum(int(db.execute(count, where).fetchone()[0]) for _, where in rows)
    db.execute("SAVEPOINT move")
    changed = sum(db.execute(update, (*sets, *where, *allowed)).rowcount for sets, where in rows)
    if changed == expect:
        db.execute("RELEASE move")
        return changed
    db.execute("ROLLBACK TO move")  # to name a step as it was
    db.execute("RELEASE move")
    check = (
        f"SELECT user_id, action, state FROM {step.table} "
        f"WHERE ({step.where}) AND state NOT IN ({marks})"
    )
    for _, where in rows:
        wrong = db.execute(check, (*where, *allowed)).fetchone()
        if wrong is not None:
            user_id, action, state = wrong
            raise IllegalTransition(
                f"ledger: {step.name} cannot move the {action} {step.table[:-1]} of {user_id} from "
                f"{state!r} (only from {', '.join(allowed)})"
            )
    raise IllegalTransition(f"ledger: {step.name} found {changed} of its {expect} steps")


# What each state means, in words (status prints these).
MEANING = {
    StepState.PLANNED: "not sent yet, or Graph answered that it did not apply it; a resume "
    "sends it",
    StepState.SENDING: "a request carrying it may be in flight (its run is live)",
    StepState.DONE: "Graph applied it",
    StepState.FAILED: "Graph refused it for good; see `batcher report`, then `batcher replay`",
    StepState.UNKNOWN: "may have been applied (no answer, or a server error); a resume sends it "
    "again and undo reverses it",
    StepState.SKIPPED: "does not apply to this user (the report says why)",
}


@dataclass(frozen=True)
class RunScope:
    """What a ledger is about; a ledger refuses a run for other actions or another tenant."""

    actions: tuple[str, ...]
    tenant: str
    cloud: str
    api_version: str


@dataclass(frozen=True)
class RunRecord:
    """Who ran what, from which inputs, with which settings (a digest: never secrets)."""

    command: str
    config_digest: str
    inputs: tuple[tuple[str, str], ...] = ()  # (path, sha256)
    command_line: str = ""  # what resumes it, as it was typed
    cwd: str = ""  # where it was typed (its relative paths are relative to it)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
