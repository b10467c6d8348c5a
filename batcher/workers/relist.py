"""Verify a list-then-act step: list each user's items again and compare with what was done.

An item deleted must be absent from the new list; an item changed (a rule disabled) must show
the field the action set. A user whose list was not read (a stop, a refusal, no answer in time)
is "not_read", never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any
from urllib.parse import quote

import anyio

from batcher.actions import ABSENT, Action
from batcher.calls import Call, Caller, NotSent
from batcher.errors import AuthError, GraphError
from batcher.graph import GraphClient
from batcher.workers.readback import Reading


async def relist(
    client: GraphClient, caller: Caller, acted: Mapping[str, Sequence[str]], reading: Reading
) -> Reading:
    """``acted``: user_id -> the IDs of the items the run acted on (done, or in doubt); each
    user's list read once more, into ``reading`` as it is read."""
    action = reading.action
    assert action.lists is not None
    listing = action.lists

    async def one(user_id: str, item_ids: Sequence[str]) -> None:
        link: str | None = listing.path.replace("{id}", quote(user_id, safe=""))
        listed: list[dict[str, Any]] = []
        while link:  # every page (@odata.nextLink): an item on a later page is still listed
            call: Call[dict[str, Any]] = Call(
                action.budget,
                send=partial(client.get_json, link),
                permission=action.permission,
                fields={"verify": True},
                key=user_id,
            )
            try:
                body = await caller(call)
            except (NotSent, AuthError, GraphError):
                return  # not read (or not whole): the user stays "not_read"
            listed.extend(v for v in body.get("value", []) if isinstance(v, dict))
            following = body.get("@odata.nextLink")
            link = following if isinstance(following, str) else None
        reading.found[user_id] = compare(action, listed, item_ids)

    async with anyio.create_task_group() as group:
        for user_id, item_ids in acted.items():
            group.start_soon(one, user_id, item_ids)
    return reading


def compare(
    action: Action, listed: Sequence[Mapping[str, Any]], item_ids: Sequence[str]
) -> tuple[str, str]:
    """(status, what was observed) for one user: the items acted on, as the new list shows
    them."""
    check = action.check
    seen = {str(item.get("id")): item for item in listed}
    if check.expect == ABSENT:
        still = [i for i in item_ids if i in seen]
        if still:
            return check.no, f"still listed: {', '.join(still)}"
        return check.yes, f"{len(item_ids)} absent; {len(seen)} listed"
    wrong = [i for i in item_ids if i in seen and seen[i].get(check.field) != check.expect]
    gone = [i for i in item_ids if i not in seen]
    if wrong:
        return check.no, f"{check.field} not {check.expect} on: {', '.join(wrong)}"
    note = f"; {len(gone)} no longer listed" if gone else ""
    return check.yes, f"{len(item_ids) - len(gone)} with {check.field} {check.expect}{note}"
