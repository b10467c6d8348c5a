"""Read back what Graph shows for each step a ledger did, paced within each read budget.

Identity Protection: for many users, the riskState-filtered list in pages of 500, then the list
of users still at risk (where it shows the users whose feedback it is still processing, with
isProcessing), then a read of every user both lists lack (to tell "still processing" from "not
confirmed"): at one request a second, 400 users take a few seconds, not minutes. The directory:
`id in (...)` look-ups of 15 users, 20 to a JSON batch. A user not read (a stop, or no answer
in time) is "not_read", never a guess; a user the directory does not have is "not_found".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from batcher.actions import AFTER_SENT, READS, Action, Read
from batcher.calls import Call, Caller, NotSent
from batcher.errors import AuthError, GraphError
from batcher.graph import MAX_BATCH, MAX_FILTER, GraphClient, match_any, users_query

PROCESSING, NOT_READ, NOT_FOUND = "processing", "not_read", "not_found"
# Where Identity Protection lists a user while it still processes feedback: their earlier state.
STILL_AT_RISK = "atRisk"
CLOCK_SKEW = timedelta(minutes=5)  # Graph's clock against ours, for "revoked after sent"
VERIFY_COLUMNS = {
    "user_id": pl.String,
    "action": pl.String,
    "verify_status": pl.String,
    "observed": pl.String,
    "expected": pl.String,
    "checked_at": pl.String,
}


@dataclass
class Reading:
    """One action's results: user_id -> (status, what was observed)."""

    action: Action
    found: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def frame(self, user_ids: Sequence[str]) -> pl.DataFrame:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        expected = self.action.check.describe()
        rows = [
            (uid, self.action.name, *self.found.get(uid, (NOT_READ, None)), expected, stamp)
            for uid in user_ids
        ]
        return pl.DataFrame(rows, schema=VERIFY_COLUMNS, orient="row")

    def counts(self, user_ids: Sequence[str]) -> dict[str, int]:
        check = self.action.check
        statuses = [self.found.get(uid, (NOT_READ, None))[0] for uid in user_ids]
        return {
            "checked": len(statuses),
            "as_expected": statuses.count(check.yes),
            "processing": statuses.count(PROCESSING),
            "not_as_expected": statuses.count(check.no),
            "not_found": statuses.count(NOT_FOUND),
            "not_read": statuses.count(NOT_READ),
        }


class Verifier:
    """Reads through ``caller``; every read is paced on its budget and retried by time."""

    def __init__(self, client: GraphClient, caller: Caller, *, per_user_up_to: int = 25) -> None:
        self._client = client
        self._caller = caller
        self._per_user_up_to = per_user_up_to

    async def risky_users(
        self, action: Action, user_ids: Sequence[str], reading: Reading | None = None
    ) -> Reading:
        """Each user's riskState; into ``reading`` as they are read, so what was read before
        a stop cancels the reads is kept."""
        reading = reading if reading is not None else Reading(action)
        check = action.check
        missing = list(user_ids)
        for state in dict.fromkeys((str(check.expect), STILL_AT_RISK)):
            if len(missing) <= self._per_user_up_to:
                break  # fewer reads one by one than pages of a list
            listed = await self._list(state)
            if listed is None:
                break
            wanted = set(missing)
            for user in listed:
                uid = str(user.get("id", "")).lower()
                if uid in wanted:
                    reading.found[uid] = _risk_status(user, action)
            missing = [uid for uid in user_ids if uid not in reading.found]
        for uid in missing:
            try:
                user = await self._read(
                    lambda crid, uid=uid: self._client.get_risky_user(uid, crid)
                )
            except _Unread:
                break  # stopped or cut short: the rest stay "not_read"
            reading.found[uid] = _risk_status(user, action)
        return reading

    async def listed(
        self, action: Action, user_ids: Sequence[str], reading: Reading | None = None
    ) -> Reading:
        """The ``user_ids`` that the list of users in the state ``action`` expects shows
        (pages of 500), and nothing else: no per-user reads of the others."""
        reading = reading if reading is not None else Reading(action)
        listed = await self._list(str(action.check.expect))
        wanted = set(user_ids)
        for user in listed or []:
            uid = str(user.get("id", "")).lower()
            if uid in wanted:
                reading.found[uid] = _risk_status(user, action)
        return reading

    async def users(
        self, action: Action, sent: dict[str, str | None], reading: Reading | None = None
    ) -> Reading:
        """``sent``: user_id -> when its request was first sent (for timestamps); into
        ``reading`` as they are read."""
        reading = reading if reading is not None else Reading(action)
        ids = list(sent)
        queries = [ids[i : i + MAX_FILTER] for i in range(0, len(ids), MAX_FILTER)]
        for start in range(0, len(queries), MAX_BATCH):
            group = queries[start : start + MAX_BATCH]
            requests = [
                users_query(match_any("id", q), str(n), ("id", action.check.field.split(".")[0]))
                for n, q in enumerate(group)
            ]
            try:
                answer = await self._read(
                    lambda crid, r=requests: self._client.batch(r, crid),
                    action.check.read,
                    cost=len(requests),
                )
            except _Unread:
                break
            for query, (inner, error) in zip(
                group, answer.per_request(len(group), ""), strict=True
            ):
                if inner is None or error is not None:
                    continue  # not read: an answer for these users is missing or an error
                seen = {
                    str(u.get("id", "")).lower(): u for u in (inner.body or {}).get("value", [])
                }
                for uid in query:
                    reading.found[uid] = _user_status(seen.get(uid), action, sent[uid])
        return reading

    async def _list(self, state: str) -> list[dict[str, Any]] | None:
        users: list[dict[str, Any]] = []
        link: str | None = None
        while True:
            try:
                page, link = await self._read(
                    lambda crid, link=link: self._client.list_risky_users(state, crid, link)
                )
            except _Unread:
                return None
            users += page
            if link is None:
                return users

    async def _read(self, send: Any, read: Read = Read.RISKY_USER, cost: float = 1) -> Any:
        source = READS[read]
        call = Call(
            source.budget,
            send=send,
            permission=source.permission,
            cost=cost,
            fields={"verify": True},
        )
        try:
            return await self._caller(call)
        except (NotSent, AuthError, GraphError):  # an AuthError has tripped the run
            raise _Unread from None


class _Unread(Exception):
    """This read did not happen: a stop, a breaker, or no answer within the retry time."""


def _risk_status(user: dict[str, Any] | None, action: Action) -> tuple[str, str | None]:
    check = action.check
    if user is None:
        return check.no, "not a risky user"
    state = user.get("riskState")
    if state == check.expect:
        return check.yes, str(state)
    return (PROCESSING if user.get("isProcessing") else check.no), str(state)


def _user_status(
    user: dict[str, Any] | None, action: Action, sent_at: str | None
) -> tuple[str, str | None]:
    check = action.check
    if user is None:
        return NOT_FOUND, "no such user"  # not "not as expected": nothing is there to see
    value: Any = user
    for part in check.field.split("."):  # a dotted field is a property inside another
        if not isinstance(value, dict) or part not in value:
            return NOT_READ, None  # the answer lacks the property: not read, never a guess
        value = value[part]
    if check.expect == AFTER_SENT:
        if value is None:
            return NOT_READ, None  # no timestamp shown: nothing to compare, so not read
        if sent_at is None:
            return check.no, str(value)
        seen = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        ok = seen >= datetime.fromisoformat(sent_at) - CLOCK_SKEW
        return (check.yes if ok else check.no), str(value)
    return (check.yes if value == check.expect else check.no), str(value)
