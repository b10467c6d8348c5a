"""The kinds of things the action table is made of: budgets, shapes, checks, skips, actions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from batcher.listing import Listing


class Budget(StrEnum):
    """Which of Graph's throttles a request draws on."""

    IDENTITY_PROTECTION = "identity_protection"  # 1 request/s per tenant, shared by all apps
    DIRECTORY_READS = "directory_reads"  # per app per tenant; 429s carry Retry-After
    DIRECTORY_WRITES = "directory_writes"  # 3,000 per 150 s per app per tenant
    REPORTS = "reports"  # identity and access reports (sign-ins, authentication methods): 5 per
    # 10 s per app per tenant
    SECURITY = "security"  # incidents and alerts: 150 per minute per app per tenant
    OUTLOOK = "outlook"  # per mailbox: 10,000 per 10 minutes, 4 at once


# Budgets Graph counts per mailbox, not per tenant: one pacer per mailbox (a call names it)
KEYED_BUDGETS = frozenset({Budget.OUTLOOK})

# What one read costs of the directory's resource units (Graph's throttling-limits table): a
# look-up, GET /users?$filter=...&$select=..., costs 2 (the user list) less 1 ($select); a read
# of one user, GET /users/{id}?$select=..., costs 1 (never less). Each request inside a JSON
# batch is costed on its own.
READ_UNITS = 1


class Shape(StrEnum):
    """How users ride in requests."""

    ID_LIST = "id_list"  # {"userIds": [...]} in one call
    PER_USER = "per_user"  # one request per user, inside JSON $batch calls


class Verdict(StrEnum):
    """What the guards decided for one user, before any action is planned."""

    ACT = "act"
    PROTECTED = "protected"  # [safety] protected, or the signed-in operator: no write at all
    HELD_BACK = "held_back"  # a privileged directory role: no action that touches_access


def withheld(action: Action, verdict: str) -> bool:
    """Whether a user with ``verdict`` gets no step of ``action``."""
    if verdict == Verdict.PROTECTED:
        return True  # whatever the action: a protected user receives no write
    return verdict == Verdict.HELD_BACK and action.touches_access


class Read(StrEnum):
    """Where verify reads an action's effect."""

    RISKY_USER = "risky_user"  # /identityProtection/riskyUsers
    USER = "user"  # /users, $select'ed
    LISTED = "listed"  # a list-then-act step's list, read again (workers/relist.py)


@dataclass(frozen=True)
class Check:
    """What verify reads back after the action, what it expects there, and the words for
    "as expected" and "not as expected".

    ``field`` may be dotted (a property inside another, e.g. passwordProfile.forceChange...);
    ``expect`` is a value the field must equal, or AFTER_SENT for a timestamp that must not be
    older than the moment the request was sent.
    """

    read: Read
    field: str
    expect: Any
    yes: str
    no: str

    def describe(self) -> str:
        """What verify expects, in words."""
        if self.expect == AFTER_SENT:
            return f"{self.field} at or after the request was sent"
        if self.expect == ABSENT:
            return "each item acted on absent when listed again"
        if self.read is Read.LISTED:
            return f"each item acted on listed again with {self.field} {self.expect}".lower()
        expect = str(self.expect).lower() if isinstance(self.expect, bool) else self.expect
        return f"{self.field} {expect}"


AFTER_SENT = "after-sent"
ABSENT = "absent"  # Read.LISTED: every item acted on is gone from the list read again


@dataclass(frozen=True)
class Skip:
    """Users an action does not apply to, by a property the look-up read: ``column`` (of the
    plan's users, e.g. on_premises_sync) equal to ``equals``; ``who`` names them in a count,
    ``reason`` is recorded on their step and said in the summary."""

    column: str
    equals: Any
    who: str
    reason: str


@dataclass(frozen=True)
class Action:
    """One Graph action. ``path`` is relative to the API version; ``{id}`` is the user."""

    name: str  # on the command line and in the ledger
    method: str
    path: str
    shape: Shape
    max_ids: int  # users per request (per inner request, for PER_USER)
    budget: Budget
    permission: str  # named when Graph answers 403 for every user
    does: str  # what it does to the users, for the gate: "{n} users will ..."
    check: Check
    undo: str | None  # the action that reverses it; None: it cannot be undone
    body: Mapping[str, Any] | None = None  # PER_USER: the JSON body of each request
    # PER_USER: per user, sent once this action has settled; when the user has no such step
    # in the run, once the one it comes after has (a chain: disable, reset-password, revoke)
    after: str | None = None
    skips_guests: str | None = None  # why guests are skipped, when they are
    clashes: tuple[str, ...] = ()  # refused in one run together with this one
    legacy: str | None = None  # its name in ledgers written before actions were data
    refused: str | None = None  # said on the user's report rows when Graph refused it for good
    cannot_undo: str | None = None  # undo None: what stays, said by undo ("... stay revoked")
    keeps_disabled: bool = False  # as an undo: an account disabled before the run stays so
    # a later step of these actions (in any ledger) voids what this one did: another run's
    # step done before it is not "done elsewhere" (a revoke before a later enable)
    voided_by: tuple[str, ...] = ()
    # said after a run where it failed for some users while an action sent after it (its
    # ``after``) went ahead: "{accounts}" and "{stay}" are filled in
    warn_failed: str | None = None
    skips: tuple[Skip, ...] = ()  # users it does not apply to, besides guests
    # PER_USER: a body made for each user (it holds a Secret): never written to the ledger
    secret_body: Callable[[], Mapping[str, Any]] | None = None
    # it changes whether the user can sign in (block, password, sign-in methods): users with a
    # privileged directory role are held back from it unless --include-admins
    touches_access: bool = False
    # it changes accounts (not only their risk): counted by the blast-radius gate ([safety]
    # confirm_over asks for the count and the primary domain above it)
    in_blast_radius: bool = True
    lists: Listing | None = None  # a step that lists its items, then acts on each
