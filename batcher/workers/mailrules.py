"""Which inbox rules a step disables: those that forward, redirect, delete, or move mail to a
folder attackers hide replies in; the system rules never.

A rule's moveToFolder holds a folder ID: the well-known folders are read by name for their IDs
(a mailbox's folder names follow its language), and any other folder a rule moves mail to is
read for its display name (RSS Feeds has no well-known name). Only read when a rule moves mail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import quote

from batcher.actions import Listing, Picks
from batcher.errors import NotFound
from batcher.ledger import ItemState

Get = Callable[[str], Awaitable[dict[str, Any]]]  # GET a path (relative to the version)


def is_system(picks: Picks, rule: dict[str, Any]) -> bool:
    name = str(rule.get("displayName") or "")
    return any(fnmatchcase(name, pattern) for pattern in picks.system)


async def hiding_folders(
    listing: Listing, user_id: str, rules: Sequence[dict[str, Any]], get: Get
) -> dict[str, str]:
    """folder ID -> its name, for each folder the rules move mail to that hides it."""
    assert listing.picks is not None
    picks = listing.picks
    wanted = {
        str(r["actions"]["moveToFolder"])
        for r in rules
        if r.get("isEnabled")
        and not is_system(picks, r)
        and (r.get("actions") or {}).get("moveToFolder")
    }
    if not wanted:
        return {}
    base = listing.folder_path.replace("{id}", quote(user_id, safe=""))
    hiding: dict[str, str] = {}
    for name in picks.folders:
        try:
            folder = await get(base.replace("{folder}", name))
        except NotFound:
            continue  # this mailbox has no such folder (no archive, say)
        hiding[str(folder.get("id"))] = str(folder.get("displayName") or name)
    for folder_id in wanted - set(hiding):
        try:
            folder = await get(base.replace("{folder}", quote(folder_id, safe="")))
        except NotFound:
            continue  # a folder gone since: nothing hides there
        if folder.get("displayName") in picks.folder_names:
            hiding[folder_id] = str(folder["displayName"])
    return hiding


def pick(
    picks: Picks, rule: dict[str, Any], hiding: dict[str, str]
) -> tuple[ItemState, str | None]:
    """Disable it (planned), or keep it and why."""
    if is_system(picks, rule):
        return ItemState.KEPT, picks.why_system
    if not rule.get("isEnabled"):
        return ItemState.KEPT, "already disabled"
    if picks.every:
        return ItemState.PLANNED, "--all-rules"
    actions = rule.get("actions") or {}
    does = [name for name in picks.actions if actions.get(name)]
    folder = hiding.get(str(actions.get("moveToFolder")))
    if folder is not None:
        does.append(f"moveToFolder {folder}")
    if does:
        return ItemState.PLANNED, ", ".join(does)
    return ItemState.KEPT, picks.why_harmless
