"""Every Graph action batcher performs, as data: endpoint, body, budget, permission, verify, undo.

Adding an action is one row in ACTIONS, its simulator endpoint and its tests: the sender, the
ledger, the gate, replay, report, undo and verify all read this table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from batcher.errors import ConfigError
from batcher.listing import HIDING, NO_MAILBOX, Listing, Picks

__all__ = ["Listing", "Picks"]  # list-then-act steps' parts, defined in listing.py
from batcher.passwords import new_password


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


RISK_PERMISSION = (
    "IdentityRiskyUser.ReadWrite.All (admin-consented; with delegated sign-in the user also "
    "needs the Security Administrator role)"
)
USER_READ_PERMISSION = (
    "User.Read.All (an application permission; for a delegated sign-in, a directory-reader "
    "role such as Directory Readers)"
)
PASSWORD_PERMISSION = (
    "User-PasswordProfile.ReadWrite.All (an application also needs the User Administrator "
    "role; an administrator's password needs Privileged Authentication Administrator)"
)
SYNCED = Skip(
    "on_premises_sync",
    True,
    "synced from on-premises",
    "reset it on-premises (or through password writeback)",
)
GUEST_RISK = (
    "a guest's risk is evaluated in their home tenant: Identity Protection cannot remediate "
    "them here; act in their home tenant"
)


RULES = "/users/{id}/mailFolders/inbox/messageRules"
MAIL_PERMISSION = "MailboxSettings.ReadWrite"


@dataclass(frozen=True)
class Source:
    """Where a read is paced, and the permission it needs (named when Graph refuses it)."""

    budget: Budget
    permission: str


# verify reads each action's effect here; the directory look-ups read users like Read.USER
READS: dict[Read, Source] = {
    Read.RISKY_USER: Source(Budget.IDENTITY_PROTECTION, "IdentityRiskyUser.Read.All"),
    Read.USER: Source(Budget.DIRECTORY_READS, USER_READ_PERMISSION),
}
# Which tenant a token signs in to, when neither the token (a JWT's tid) nor [auth] tenant_id
# says: GET /organization?$select=id, one directory read before the ledger is chosen
TENANT_READ = Source(
    Budget.DIRECTORY_READS,
    "Organization.Read.All (User.Read for a delegated sign-in); or set [auth] tenant_id",
)


class Feed(StrEnum):
    """Where run reads its users straight from Graph, beside files."""

    INCIDENT = "incident"  # GET /security/incidents/{id}?$expand=alerts
    RISKY = "risky"  # GET /identityProtection/riskyUsers?$filter=riskLevel ... atRisk
    SIGN_INS = "sign_ins"  # GET /auditLogs/signIns?$filter=ipAddress ... createdDateTime


# each source's budget and permission; risky users spend Identity Protection's 1 request/s, as
# confirm does
FEEDS: dict[Feed, Source] = {
    Feed.INCIDENT: Source(
        Budget.SECURITY, "SecurityIncident.Read.All (and SecurityAlert.Read.All)"
    ),
    Feed.RISKY: Source(Budget.IDENTITY_PROTECTION, "IdentityRiskyUser.Read.All"),
    Feed.SIGN_INS: Source(Budget.REPORTS, "AuditLog.Read.All (and an Entra ID P1 licence)"),
}

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action(
            name="disable",
            method="PATCH",
            path="/users/{id}",
            shape=Shape.PER_USER,
            max_ids=1,
            budget=Budget.DIRECTORY_WRITES,
            body={"accountEnabled": False},
            permission="User.EnableDisableAccount.All (with User.Read.All)",
            does="will be unable to sign in until enabled",
            check=Check(Read.USER, "accountEnabled", False, "disabled", "still_enabled"),
            undo="enable",
            clashes=("enable",),
            refused="the account stays enabled: Graph refused to disable it",
            touches_access=True,
            warn_failed="{accounts} could not be disabled: {stay} enabled",
        ),
        Action(
            name="enable",
            method="PATCH",
            path="/users/{id}",
            shape=Shape.PER_USER,
            max_ids=1,
            budget=Budget.DIRECTORY_WRITES,
            body={"accountEnabled": True},
            permission="User.EnableDisableAccount.All (with User.Read.All)",
            does="will be able to sign in again",
            check=Check(Read.USER, "accountEnabled", True, "enabled", "still_disabled"),
            undo="disable",
            clashes=("disable",),
            refused="the account stays disabled: Graph refused to enable it",
            keeps_disabled=True,
        ),
        Action(
            name="reset-password",
            method="PATCH",
            path="/users/{id}",
            shape=Shape.PER_USER,
            max_ids=1,
            budget=Budget.DIRECTORY_WRITES,
            secret_body=lambda: {
                "passwordProfile": {
                    "password": new_password(),
                    # alone, it lets whoever knows the current password choose the next one
                    "forceChangePasswordNextSignIn": True,
                }
            },
            permission=PASSWORD_PERMISSION,
            does="will get a new random password nobody is told (written nowhere but "
            "--passwords-out); the help desk sets the next one, changed at next sign-in",
            check=Check(Read.USER, "lastPasswordChangeDateTime", AFTER_SENT, "reset", "not_reset"),
            undo=None,
            cannot_undo="the old password is gone: a reset password stays reset",
            after="disable",
            skips=(SYNCED,),
            refused="the password was not reset: Graph refused it",
            touches_access=True,
        ),
        Action(
            name="revoke-sessions",
            method="POST",
            path="/users/{id}/revokeSignInSessions",
            shape=Shape.PER_USER,
            max_ids=1,
            budget=Budget.DIRECTORY_WRITES,
            permission="User.RevokeSessions.All",
            does="must sign in again (refresh tokens and session cookies revoked; access "
            "tokens already issued stay valid up to about an hour)",
            check=Check(
                Read.USER, "signInSessionsValidFromDateTime", AFTER_SENT, "revoked", "not_revoked"
            ),
            undo=None,
            cannot_undo="revoked sessions stay revoked",
            # revoking first lets the attacker sign in again before the block (and the reset)
            after="reset-password",
            voided_by=("enable",),  # sessions opened once enabled again are valid
            skips_guests="revoking sessions does not apply to external (guest) users; revoke "
            "them in their home tenant",
        ),
        Action(
            name="remove-auth-methods",
            method="GET",
            path="/users/{id}/authentication/methods",
            shape=Shape.PER_USER,
            max_ids=1,
            budget=Budget.REPORTS,
            permission="UserAuthenticationMethod.ReadWrite.All",
            does="lose every sign-in method but the password (phones, Authenticator, FIDO2 "
            "keys, e-mail...): re-registering them is the user's, once the account is theirs "
            "again; paced at 5 requests per 10 s, so it is slow",
            check=Check(Read.LISTED, "id", ABSENT, "removed", "not_removed"),
            undo=None,
            cannot_undo="removed methods stay removed: the user registers them again",
            after="revoke-sessions",
            lists=Listing(
                path="/users/{id}/authentication/methods",
                item_path="/users/{id}/authentication/{kind}Methods/{item}",
                act="DELETE",
                keep={"password": "the password method cannot be deleted (reset it instead)"},
                evidence=(
                    "displayName",
                    "createdDateTime",
                    "phoneNumber",
                    "phoneType",
                    "emailAddress",
                ),
                masked=("phoneNumber",),
                since="createdDateTime",
                last=("phone",),
            ),
            refused="the sign-in methods stay: Graph refused to remove them",
        ),
        Action(
            name="disable-mail-rules",
            method="GET",
            path=RULES,
            shape=Shape.PER_USER,
            max_ids=1,
            budget=Budget.OUTLOOK,
            permission=MAIL_PERMISSION,
            does="will have every inbox rule that forwards, redirects, deletes or hides mail "
            "(Archive, RSS, Junk, Deleted Items...) disabled; system rules are left alone and "
            "each rule's before-image is kept",
            check=Check(Read.LISTED, "isEnabled", False, "disabled", "still_enabled"),
            undo="enable-mail-rules",
            clashes=("enable-mail-rules",),
            after="remove-auth-methods",
            lists=Listing(
                path=RULES,
                item_path=RULES + "/{item}",
                act="PATCH",
                body={"isEnabled": False},
                keep={},
                evidence=("displayName", "sequence", "isEnabled", "conditions", "actions"),
                kind="rule",
                picks=HIDING,
                folder_path="/users/{id}/mailFolders/{folder}",
                missing=NO_MAILBOX,
            ),
            refused="the inbox rules stay enabled: Graph refused to disable them",
        ),
        Action(
            name="enable-mail-rules",
            method="GET",
            path=RULES,
            shape=Shape.PER_USER,
            max_ids=1,
            budget=Budget.OUTLOOK,
            permission=MAIL_PERMISSION,
            does="will have the inbox rules that run disabled enabled again (exactly those)",
            check=Check(Read.LISTED, "isEnabled", True, "enabled", "still_disabled"),
            undo="disable-mail-rules",
            clashes=("disable-mail-rules",),
            lists=Listing(
                path=RULES,
                item_path=RULES + "/{item}",
                act="PATCH",
                body={"isEnabled": True},
                keep={},
                evidence=("displayName", "sequence", "isEnabled", "conditions", "actions"),
                kind="rule",
                missing=NO_MAILBOX,
                undoes="disable-mail-rules",
            ),
            refused="the inbox rules stay disabled: Graph refused to enable them",
        ),
        Action(
            name="confirm",
            method="POST",
            path="/identityProtection/riskyUsers/confirmCompromised",
            shape=Shape.ID_LIST,
            max_ids=60,
            budget=Budget.IDENTITY_PROTECTION,
            permission=RISK_PERMISSION,
            does="will be confirmed compromised (risk high; Conditional Access may block them "
            "or force a password reset)",
            check=Check(
                Read.RISKY_USER, "riskState", "confirmedCompromised", "confirmed", "not_confirmed"
            ),
            undo="dismiss",
            skips_guests=GUEST_RISK,
            clashes=("dismiss",),
            legacy="confirmCompromised",
            in_blast_radius=False,  # it changes risk, not access
        ),
        Action(
            name="dismiss",
            method="POST",
            path="/identityProtection/riskyUsers/dismiss",
            shape=Shape.ID_LIST,
            max_ids=60,
            budget=Budget.IDENTITY_PROTECTION,
            permission=RISK_PERMISSION,
            does="will have their user risk dismissed",
            check=Check(Read.RISKY_USER, "riskState", "dismissed", "dismissed", "not_dismissed"),
            undo=None,
            cannot_undo="a dismissal does not restore the earlier risk",
            skips_guests=GUEST_RISK,
            clashes=("confirm",),
            legacy="dismiss",
            in_blast_radius=False,
        ),
    )
}
DEFAULT_ACTION = "confirm"
CONTAIN = ("confirm", "disable", "revoke-sessions")  # --remediate: the whole clean-up
REMEDIATE = (*CONTAIN, "reset-password", "remove-auth-methods", "disable-mail-rules")
ORDER = tuple(ACTIONS)  # the table's order is each user's safe order: disable before revoke


def action_named(name: str) -> Action:
    """The action called ``name`` (or its legacy name, from an older ledger)."""
    for action in ACTIONS.values():
        if name in (action.name, action.legacy):
            return action
    raise ConfigError(f"unknown action {name!r}; choose from {', '.join(ACTIONS)}")


def choose(names: Iterable[str]) -> tuple[Action, ...]:
    """The actions for one run, in each user's safe order; refuses a contradictory set."""
    chosen = {action_named(n).name for n in names} or {DEFAULT_ACTION}
    for name in sorted(chosen):
        for clash in ACTIONS[name].clashes:
            if clash not in chosen:
                continue
            raise ConfigError(
                f"--action {name} and --action {clash} contradict each other; run them "
                "separately, in the order you mean"
            )
    return tuple(ACTIONS[n] for n in ORDER if n in chosen)


def reverse(actions: Iterable[Action]) -> tuple[tuple[Action, Action], ...]:
    """(action, its undo) for every action that can be undone."""
    return tuple((a, ACTIONS[a.undo]) for a in actions if a.undo is not None)


def comes_after(action: Action) -> tuple[str, ...]:
    """The actions ``action`` waits for, nearest first (revoke-sessions: reset-password, then
    disable): per user, it waits for the first of them the user has in the run."""
    chain: list[str] = []
    name = action.after
    while name is not None and name not in chain:
        chain.append(name)
        name = ACTIONS[name].after
    return tuple(chain)


def sent_after(name: str) -> tuple[Action, ...]:
    """The actions a user gets only once their ``name`` step settled (revoke after disable)."""
    return tuple(a for a in ACTIONS.values() if name in comes_after(a))


def permission_for(actions: Iterable[Action]) -> str:
    """The permission a request carrying ``actions`` needs: one when they share it, else each
    action's own, named for it."""
    needs: dict[str, list[str]] = {}
    for action in actions:
        named = needs.setdefault(action.permission, [])
        if action.name not in named:
            named.append(action.name)
    if len(needs) == 1:
        return next(iter(needs))
    return " and ".join(f"{p} for {', '.join(n)}" for p, n in needs.items())


def names(actions: Iterable[Action]) -> str:
    return ",".join(a.name for a in actions)
