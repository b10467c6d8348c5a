"""What list-then-act steps are made of (the action table's rows use them): a listing, and which
inbox rules a step picks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Picks:
    """Which listed inbox rules a step acts on: enabled ones that do any of ``actions``, or
    move mail to one of ``folders`` (well-known names) or ``folder_names`` (display names:
    RSS Feeds has no well-known name); ``every``: every enabled rule. Rules named in
    ``system`` (a trailing * is a prefix) are never touched."""

    actions: tuple[str, ...]
    folders: tuple[str, ...]
    folder_names: tuple[str, ...]
    system: tuple[str, ...]
    why_system: str
    why_harmless: str
    every: bool = False


@dataclass(frozen=True)
class Listing:
    """A step that discovers its work: list ``path``, then act on each item it finds (``act``
    with ``body``; the item's path is ``item_path`` with {id}, {kind} and {item}), paced on the
    action's budget. ``keep`` names kinds never acted on, with why; ``since`` is the field --since
    compares (kinds without it are kept when --since is given); ``evidence`` the fields of each
    before-image, ``masked`` those shown only by their last two characters."""

    path: str
    item_path: str
    act: str
    keep: Mapping[str, str]
    evidence: tuple[str, ...]
    masked: tuple[str, ...] = ()
    since: str | None = None
    body: Mapping[str, Any] | None = None
    last: tuple[str, ...] = ()  # kinds Graph may refuse while others remain: tried again last
    gone: str = "already gone (removed by someone else before this run reached it)"
    expect: int = 2  # items a user typically has to act on: the plan's estimate only
    kind: str | None = None  # the kind of every item, when the list does not type them
    picks: Picks | None = None  # inbox rules: which to act on (workers/mailrules.py)
    folder_path: str = ""  # with picks: where a mail folder is read, by ID or well-known name
    missing: tuple[str, str] | None = None  # (error code, reason): a 404 with it skips the user
    undoes: str | None = None  # an undo: acts on the items this action did in the original


NO_MAILBOX = (
    "MailboxNotEnabledForRESTAPI",
    "no Exchange Online mailbox (none, inactive or on-premises): no inbox rules to disable",
)
# What attackers' inbox rules do: forward or redirect mail out, delete it, or hide replies in
# folders nobody reads (Microsoft's guidance for a compromised mailbox)
HIDING = Picks(
    actions=("forwardTo", "forwardAsAttachmentTo", "redirectTo", "delete", "permanentDelete"),
    folders=("archive", "conversationhistory", "deleteditems", "junkemail"),
    folder_names=("RSS Feeds", "RSS Subscriptions"),
    system=("Junk E-Mail Rule", "Microsoft.Exchange.OOF.*", "Delegate Rule"),
    why_system="a system rule: never touched",
    why_harmless="neither forwards, redirects, deletes nor hides mail",
)
