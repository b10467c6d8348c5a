"""What Graph shows before batcher reverses or records anything: the state a run found, and
whether a step in doubt was applied. Undo never reverses what this run did not do."""

from __future__ import annotations

from collections.abc import Sequence

from batcher.actions import Action, Read
from batcher.calls import Caller
from batcher.graph import GraphClient
from batcher.workers.readback import Reading, Verifier

# Fewer users than this are read one by one; more, from the list of users in the state.
PER_USER_UP_TO = 25


async def already_so(
    client: GraphClient,
    caller: Caller,
    action: Action,
    users: Sequence[str],
    per_user_up_to: int = PER_USER_UP_TO,
) -> set[str]:
    """The ``users`` whose risk already reads as ``action`` leaves it (confirmed compromised
    before the run): an undo must leave them so. Read from the list of users in that state
    (pages of 500), or one by one for a few users; a user not read is not in the answer."""
    if action.check.read is not Read.RISKY_USER or not users:
        return set()
    verifier = Verifier(client, caller, per_user_up_to=per_user_up_to)
    reading = Reading(action)
    if len(users) <= per_user_up_to:
        await verifier.risky_users(action, users, reading)
    else:
        await verifier.listed(action, users, reading)
    return {uid for uid, (status, _) in reading.found.items() if status == action.check.yes}


async def applied_now(
    client: GraphClient, caller: Caller, action: Action, users: Sequence[str]
) -> set[str]:
    """The ``users`` whose step of ``action`` was in doubt (unknown) and whose state now reads
    as the action leaves it: only those may be reversed. A user not read is not."""
    if not users:
        return set()
    if action.check.read is Read.LISTED:  # its items: reversing one not applied is harmless
        return set(users)
    verifier = Verifier(client, caller, per_user_up_to=PER_USER_UP_TO)
    reading = Reading(action)
    if action.check.read is Read.RISKY_USER:
        await verifier.risky_users(action, users, reading)
    else:
        await verifier.users(action, dict.fromkeys(users), reading)
    return {uid for uid, (status, _) in reading.found.items() if status == action.check.yes}
