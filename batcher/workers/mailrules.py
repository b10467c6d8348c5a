"""Which inbox rules a step disables: those that forward, redirect, delete, or move mail to a
folder attackers hide replies in; the system rules never.

A rule's moveToFolder holds a folder ID: the well-known folders are read by name for their IDs
(a mailbox's folder names follow its language), and any other folder a rule moves mail to is
read for its display name (RSS Feeds has no well-known name). Only read when a rule moves mail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import quote

from batcher.actions import Listing, Picks
from batcher.errors import ConfigError, NotFound
from batcher.ledger import ItemState

Get = Callable[[str], Awaitable[dict[str, Any]]]  # GET a path (relative to the version)
META_ALL_RULES = "all_rules"  # the ledger's record of --all-rules: "yes" or "no"


def picks_rules(actions: Iterable[Any]) -> list[str]:
    """The actions that pick inbox rules to act on (what --all-rules is for)."""
    return [a.name for a in actions if a.lists is not None and a.lists.picks is not None]


def settle_all_rules(given: bool, meta: Mapping[str, str]) -> bool:
    """--all-rules on a ledger: as its first run recorded it; a resume that picks rules the
    other way is refused in one line (the rules it listed were picked one way)."""
    recorded = meta.get(META_ALL_RULES)
    if recorded is None or (recorded == "yes") == given:
        return given
    if given:
        raise ConfigError(
            "--all-rules differs from this ledger's first run, which disabled only the inbox "
            "rules that forward, redirect, delete or hide mail; a resume picks rules one way: "
            "leave --all-rules out, or use a new --ledger to disable every rule"
        )
    raise ConfigError(
        "this ledger's first run gave --all-rules (every inbox rule but the system ones); a "
        "resume picks rules one way: give --all-rules again, or use a new --ledger"
    )


def all_rules_line(picks: Picks, recorded: bool) -> str:
    """The plan's and the gate's line for --all-rules."""
    kept = "; recorded in the ledger by its first run: a resume keeps it" * recorded
    return (
        f"--all-rules: every enabled inbox rule is disabled, harmless ones too, not only those "
        f"that forward, redirect, delete or hide mail; system rules ({', '.join(picks.system)}) "
        f"are never touched{kept}"
    )


def picks_of(picks: Picks, meta: Mapping[str, str]) -> Picks:
    """The picks a run makes: every non-system rule when its ledger recorded --all-rules."""
    return replace(picks, every=True) if meta.get(META_ALL_RULES) == "yes" else picks


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
