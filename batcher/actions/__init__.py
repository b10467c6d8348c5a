"""Every Graph action batcher performs, as data: endpoint, body, budget, permission, verify, undo.

Adding an action is one row in ACTIONS, its simulator endpoint and its tests: the sender, the
ledger, the gate, replay, report, undo and verify all read this table.
"""

from __future__ import annotations

from collections.abc import Iterable

from batcher.actions.kinds import (
    ABSENT,
    AFTER_SENT,
    KEYED_BUDGETS,
    READ_UNITS,
    Action,
    Budget,
    Check,
    Read,
    Shape,
    Skip,
    Verdict,
    withheld,
)
from batcher.actions.reads import (
    FEEDS,
    READS,
    TENANT_READ,
    USER_READ_PERMISSION,
    Feed,
    Source,
)
from batcher.errors import ConfigError
from batcher.listing import HIDING, NO_MAILBOX, Listing, Picks
from batcher.passwords import new_password

__all__ = [  # the table's parts, defined beside it (kinds.py, reads.py) and in listing.py
    "ABSENT",
    "AFTER_SENT",
    "FEEDS",
    "KEYED_BUDGETS",
    "READS",
    "READ_UNITS",
    "TENANT_READ",
    "USER_READ_PERMISSION",
    "Action",
    "Budget",
    "Check",
    "Feed",
    "Listing",
    "Picks",
    "Read",
    "Shape",
    "Skip",
    "Source",
    "Verdict",
    "withheld",
]


RISK_PERMISSION = (
    "IdentityRiskyUser.ReadWrite.All (admin-consented; with delegated sign-in the user also "
    "needs the Security Administrator role)"
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
            touches_access=True,
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
            touches_access=True,  # an administrator's mailbox is held back with the account
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
