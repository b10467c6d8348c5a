"""Steps that discover their work: list a user's items, record them, then act on each.

The list and each item are ledger rows with their own states: a resume after a kill does not
list again what it listed, and sends again only the items not settled (an item deleted by the
request a kill cut off answers 404 on the resend: "already gone", not deleted twice).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import polars as pl

from batcher import failpoints
from batcher.actions import Action, Listing
from batcher.calls import Call, NotSent
from batcher.errors import BadRequest, GraphError, NotFound
from batcher.graph import answer_of
from batcher.ledger import Answer, Item, ItemKey, ItemState, Outcome, StepResult, StepState
from batcher.window import Window, recorded_window
from batcher.workers.lanes import LaneContext
from batcher.workers.mailrules import hiding_folders, pick, picks_of

ODATA = "#microsoft.graph."


def kind_of(raw: dict[str, Any], listing: Listing | None = None) -> str:
    """``#microsoft.graph.phoneAuthenticationMethod`` -> ``phone``; the listing's own kind for
    items a list does not type (inbox rules)."""
    if listing is not None and listing.kind is not None:
        return listing.kind
    name = str(raw.get("@odata.type", "")).removeprefix(ODATA)
    return name.removesuffix("AuthenticationMethod") or "unknown"


def masked(value: object) -> object:
    """A phone number shown by its last two digits only."""
    text = str(value or "")
    return "*" * max(0, len(text) - 2) + text[-2:] if text else value


def before_image(listing: Listing, raw: dict[str, Any]) -> dict[str, Any]:
    """The evidence kept of one item: its kind, ID and the listing's fields, masked."""
    image: dict[str, Any] = {"kind": kind_of(raw, listing), "id": raw.get("id")}
    for name in listing.evidence:
        if name in raw:
            image[name] = masked(raw[name]) if name in listing.masked else raw[name]
    return image


def first_state(
    listing: Listing, raw: dict[str, Any], window: Window | None
) -> tuple[ItemState, str | None]:
    """Act on it (planned), or keep it and why."""
    kind = kind_of(raw)
    if kind in listing.keep:
        return ItemState.KEPT, listing.keep[kind]
    if window is not None and listing.since is not None:
        stamp = raw.get(listing.since)
        if not stamp:
            return ItemState.KEPT, f"--since: a {kind} method has no registration time"
        if datetime.fromisoformat(str(stamp)) < window.start:
            return ItemState.KEPT, f"--since: registered {stamp}, before {window.shown()}"
    return ItemState.PLANNED, None


def items_from(
    listing: Listing,
    found: list[dict[str, Any]],
    window: Window | None,
    hiding: dict[str, str] | None = None,
) -> list[Item]:
    """The listed items in the order to act on them (``listing.last`` kinds last); inbox rules
    picked by ``listing.picks`` (``hiding``: the folders that hide mail, by ID)."""
    items = []
    for n, raw in enumerate(found):
        if listing.picks is not None:
            state, reason = pick(listing.picks, raw, hiding or {})
        else:
            state, reason = first_state(listing, raw, window)
        position = n + (len(found) if kind_of(raw, listing) in listing.last else 0)
        items.append(
            Item(
                str(raw.get("id")),
                kind_of(raw, listing),
                position,
                state,
                before_image(listing, raw),
                reason,
            )
        )
    return items


async def discover_and_act(lanes: LaneContext, user_id: str, action: Action) -> StepState:
    """List ``user_id``'s items (unless listed before), then act on each; the step's state."""
    assert action.lists is not None
    listing, ledger, key = action.lists, lanes.ledger, (user_id, action.name)
    commit = lanes.commit  # every write here goes in a group commit with other users'
    batch_id, attempt_id = await commit(
        lambda: ledger.start_batch(action.name, [key], str(uuid.uuid4()))
    )
    state, answer = StepState.DONE, Answer(Outcome.ACCEPTED, 200)
    try:
        if not ledger.listed(user_id, action.name):
            # an undo's items were recorded from the original run's (job/undo.py): none here
            found = [] if listing.undoes else await _list(lanes, action, user_id)
            await commit(lambda: ledger.record_listing(user_id, action.name, found))
            failpoints.hit("items.listed")
        state = await _act_on_items(lanes, action, user_id)
    except NotSent:  # a stop: what is left stays for a resume
        await commit(lambda: ledger.release_steps([key]))
        return StepState.PLANNED
    except GraphError as exc:
        answer = answer_of(exc)
        if listing.missing is not None and exc.code == listing.missing[0]:
            skipped = (listing.missing[1], StepResult(key, answer, None))

            def skip() -> None:
                ledger.finish_steps(batch_id, attempt_id, answer, [skipped[1]])
                ledger.release_steps([key])
                ledger.skip_steps(action.name, pl.Series([user_id]), skipped[0])

            await commit(skip)
            return StepState.SKIPPED
        state = StepState.FAILED if isinstance(exc, NotFound | BadRequest) else StepState.UNKNOWN
    done = StepResult(key, answer, state)
    await commit(lambda: ledger.finish_steps(batch_id, attempt_id, answer, [done]))
    return state


async def _list(lanes: LaneContext, action: Action, user_id: str) -> list[Item]:
    """Read the user's list; each item planned or kept (inbox rules: read the folders the
    rules move mail to first)."""
    assert action.lists is not None
    listing, meta = action.lists, lanes.ledger.meta()
    link: str | None = listing.path.replace("{id}", quote(user_id, safe=""))
    found: list[dict[str, Any]] = []
    while link:  # every page: a list longer than one page says where the next is
        page = await _call(lanes, action, "GET", link, user_id)
        found.extend(v for v in page.get("value", []) if isinstance(v, dict))
        following = page.get("@odata.nextLink")
        link = following if isinstance(following, str) else None
    hiding = None
    if listing.picks is not None:
        listing = replace(listing, picks=picks_of(listing.picks, meta))  # --all-rules
        hiding = await hiding_folders(
            listing,
            user_id,
            found,
            lambda folder: _call(lanes, action, "GET", folder, user_id),
        )
    return items_from(listing, found, recorded_window(meta), hiding)


async def _act_on_items(lanes: LaneContext, step: Action, user_id: str) -> StepState:
    assert step.lists is not None
    ledger, listing, action = lanes.ledger, step.lists, step.name
    todo = ledger.items_of(
        user_id, action, [ItemState.PLANNED, ItemState.SENDING, ItemState.UNKNOWN]
    )
    deferred: list[Item] = []
    for item, again in [(i, True) for i in todo]:
        if not await _act_on(lanes, step, user_id, item, defer=again and item.kind in listing.last):
            deferred.append(item)
    for item in deferred:  # refused while others remained (a default phone): once more, last
        await _act_on(lanes, step, user_id, item, defer=False)
    states = {i.state for i in ledger.items_of(user_id, action)}
    if ItemState.UNKNOWN in states or ItemState.SENDING in states:
        return StepState.UNKNOWN
    return StepState.FAILED if ItemState.FAILED in states else StepState.DONE


async def _act_on(
    lanes: LaneContext, step: Action, user_id: str, item: Item, *, defer: bool
) -> bool:
    """Act on one item and record its answer; False: refused for now, to try again last."""
    assert step.lists is not None
    listing = step.lists
    key = (user_id, step.name, item.item_id)
    path = (
        listing.item_path.replace("{id}", quote(user_id, safe=""))
        .replace("{kind}", item.kind)
        .replace("{item}", quote(item.item_id, safe=""))
    )
    try:
        await _call(
            lanes,
            step,
            listing.act,
            path,
            user_id,
            listing.body,
            before=lambda crid: lanes.commit(lambda: lanes.ledger.start_item(key, crid)),
        )
    except NotFound as exc:
        await _finish(lanes, key, ItemState.GONE, answer_of(exc), listing.gone)
    except BadRequest as exc:
        if defer:
            why = "refused while others remained"
            await _finish(lanes, key, ItemState.PLANNED, answer_of(exc), why)
            return False
        await _finish(lanes, key, ItemState.FAILED, answer_of(exc), exc.message)
    except GraphError as exc:
        status = exc.status or 0
        doubt = status in (0, 429) or status >= 500
        state = ItemState.UNKNOWN if doubt else ItemState.FAILED
        await _finish(lanes, key, state, answer_of(exc))
    else:
        await _finish(lanes, key, ItemState.DONE, Answer(Outcome.ACCEPTED, 204))
    return True


async def _finish(
    lanes: LaneContext, key: ItemKey, state: ItemState, answer: Answer, reason: str | None = None
) -> None:
    """Record Graph's answer for one item (in a group commit), before going on."""
    await lanes.commit(lambda: lanes.ledger.finish_item(key, state, answer, reason))


async def _call(
    lanes: LaneContext,
    action: Action,
    method: str,
    path: str,
    user_id: str,
    body: Any = None,
    *,
    before: Callable[[str], Awaitable[None] | None] = lambda crid: None,
) -> dict[str, Any]:
    """One request of its own, paced on the action's budget (per mailbox when keyed)."""
    call: Call[dict[str, Any]] = Call(
        action.budget,
        # a GET may be a page's whole @odata.nextLink
        send=lambda crid: (
            lanes.client.get_json(path, crid)
            if method == "GET"
            else lanes.client.call(method, path, crid, body)
        ),
        permission="",
        before=before,
        fields={"action": method + " " + urlsplit(path).path.split("/")[-2], "ids": 1},
        key=user_id,
    )
    return await lanes.caller(call)
