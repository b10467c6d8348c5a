"""Resolve identities (UPNs, e-mail addresses, old aliases, SIDs) to object IDs, read-only, in bulk.

Look-ups ride in JSON batches of 20 `GET /users?$filter=...` requests of up to 15 values each,
paced on the directory-reads budget: first `userPrincipalName in (...)`, then `mail in (...)`
for what is still missing, then `proxyAddresses/any(...)` for old aliases; SIDs by
`onPremisesSecurityIdentifier`. Each identity ends resolved, not_found, ambiguous or guest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import polars as pl

from batcher.actions import READS, Read
from batcher.calls import Call, Caller, NotSent, refused
from batcher.control import Control
from batcher.errors import (
    AuthError,
    BadRequest,
    Forbidden,
    GraphError,
    NoAnswer,
    ServerError,
    Throttled,
    Unauthorized,
)
from batcher.eventlog import Event, Observer
from batcher.graph import (
    MAX_BATCH,
    MAX_FILTER,
    BatchAnswer,
    GraphClient,
    InnerRequest,
    match_any,
    match_proxy,
    users_query,
)
from batcher.inputs import KIND_SID, KIND_UPN
from batcher.ledger import LOOKUP_COLUMNS
from batcher.workers.lists import halves

LOOKUP = READS[Read.USER]  # look-ups read users where verify reads them: same budget, permission
READ_PERMISSION = LOOKUP.permission
RESOLVED, NOT_FOUND, AMBIGUOUS, GUEST = "resolved", "not_found", "ambiguous", "guest"
# Not an outcome of the directory: Graph never answered (not cached; the same command retries).
NOT_LOOKED_UP = "not_looked_up"


@dataclass(frozen=True)
class Stage:
    """One pass over the identities still missing: which kind, which property, how it matched."""

    kind: str
    matched_by: str
    field: str  # the user property compared; "proxyAddresses" for the alias lambda

    def query(self, values: Sequence[str], ref: str) -> InnerRequest:
        if self.field == "proxyAddresses":
            return users_query(match_proxy(values), ref)
        return users_query(match_any(self.field, values), ref)

    def matches(self, user: dict[str, Any], value: str) -> bool:
        if self.field == "proxyAddresses":
            wanted = f"smtp:{value.lower()}"
            return any(str(p).lower() == wanted for p in user.get("proxyAddresses") or [])
        return str(user.get(self.field) or "").lower() == value.lower()


STAGES = (
    Stage("object_id", "object_id", "id"),
    Stage(KIND_UPN, "upn", "userPrincipalName"),
    Stage(KIND_UPN, "mail", "mail"),
    Stage(KIND_UPN, "proxy_address", "proxyAddresses"),
    Stage(KIND_SID, "sid", "onPremisesSecurityIdentifier"),
)
NOT_FOUND_REASON = {
    "object_id": "no user has this object ID in this tenant's directory (deleted, or from "
    "another tenant)",
    KIND_UPN: "no user has this UPN, e-mail address or alias (proxy address) in the directory",
    KIND_SID: "no user has this on-premises SID (is the account synchronised to Entra ID?)",
}


NO_ANSWER_REASON = (
    "no answer from Graph within the retry time; not acted on: run the same command to look it "
    "up again"
)


def estimate_requests(kinds: dict[str, int]) -> int:
    """JSON batches for the first pass over ``kinds`` (identity kind -> how many)."""
    filters = sum(math.ceil(n / MAX_FILTER) for n in kinds.values())
    return math.ceil(filters / MAX_BATCH)


# (kind, the value looked up) -> the input rows that name it: variants of one identity in case
# and surrounding whitespace are looked up once, and each row gets its outcome
Groups = dict[tuple[str, str], list[dict[str, Any]]]


def _groups(rows: dict[tuple[str, str], dict[str, Any]]) -> Groups:
    groups: Groups = {}
    looked_up: dict[tuple[str, str], str] = {}  # (kind, value folded) -> the value looked up
    for (kind, value), row in rows.items():
        plain = str(value).strip()
        query = looked_up.setdefault((kind, plain.lower()), plain)
        groups.setdefault((kind, query), []).append(row)
    return groups


@dataclass
class _Query:
    stage: Stage
    values: list[str]
    tries: int = 0
    first_sent: float | None = None  # when it was first sent: its retry time counts from then
    not_before: float = 0.0  # when it may be sent again (a back-off)


@dataclass
class Resolver:
    """Looks identities up through ``caller`` on the directory-reads budget."""

    client: GraphClient
    caller: Caller
    record: Callable[[pl.DataFrame], None] = lambda frame: None  # the ledger's cache
    max_in_flight: int = 4
    outcomes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: int = 0
    control: Control = field(kw_only=True)  # the look-up's: stops, breaker, observer

    @property
    def observer(self) -> Observer:
        return self.control.observer

    async def resolve(self, identities: pl.DataFrame) -> pl.DataFrame:
        """One LOOKUP_COLUMNS row per identity (input_value, kind, source_file, source_row);
        after a stop or a trip, only for the identities that were looked up."""
        control = self.control
        rows = {(r["kind"], r["input_value"]): r for r in identities.iter_rows(named=True)}
        groups = _groups(rows)
        for stage in STAGES:
            wanted = [
                v
                for (k, v), group in groups.items()
                if k == stage.kind and (k, group[0]["input_value"]) not in self.outcomes
            ]
            if wanted:
                await self._stage(stage, wanted, groups)
            if control.ended:
                break
        if not control.ended:  # else not all was looked up
            missing = [key for key in rows if key not in self.outcomes]
            self._settle(
                [
                    self._outcome(rows[key], NOT_FOUND, reason=NOT_FOUND_REASON[key[0]])
                    for key in missing
                ]
            )
        found = [self.outcomes[key] for key in rows if key in self.outcomes]
        return pl.DataFrame(found, schema=LOOKUP_COLUMNS, orient="row")

    async def _stage(self, stage: Stage, values: list[str], groups: Groups) -> None:
        queue = [
            _Query(stage, values[i : i + MAX_FILTER]) for i in range(0, len(values), MAX_FILTER)
        ]
        changed = anyio.Event()
        busy = 0

        async def worker() -> None:
            nonlocal changed, busy
            while not self.control.ended:
                now = time.monotonic()
                due = [q for q in queue if q.not_before <= now][:MAX_BATCH]
                if not due:
                    if not queue and not busy:
                        return
                    with anyio.move_on_after(0.05 if queue else math.inf):
                        await changed.wait()
                    continue
                for q in due:
                    queue.remove(q)
                busy += 1
                try:
                    queue.extend(await self._send(due, groups))
                finally:
                    busy -= 1
                    changed.set()
                    changed = anyio.Event()

        async with anyio.create_task_group() as group:
            for _ in range(self.max_in_flight):
                group.start_soon(worker)

    async def _send(self, queries: list[_Query], groups: Groups) -> list[_Query]:
        """One JSON batch of look-ups; returns the queries to send again."""
        requests = [q.stage.query(q.values, str(n)) for n, q in enumerate(queries)]
        now = time.monotonic()
        for query in queries:
            query.first_sent = query.first_sent or now
        crids: list[str] = []
        pacer = self.caller.pacer(LOOKUP.budget)
        left_at: list[float] = []  # when each try was granted its turn (the pacer's clock)

        def intent(crid: str) -> None:
            crids.append(crid)
            left_at.append(pacer.now())

        call = Call(
            LOOKUP.budget,
            send=lambda crid: self.client.batch(requests, crid),
            permission=READ_PERMISSION,
            cost=len(requests),
            before=intent,
            fields={"lookup": len(requests)},
        )
        self.requests += 1
        try:
            answer: BatchAnswer = await self.caller(call)
        except NotSent:  # a stop: not sent; the workers end, the queries stay unanswered
            return queries
        except AuthError:  # sign-in failed while renewing the token (the run is tripped)
            return []
        except GraphError:  # out of retry time for the whole batch: try its queries later
            return self._later(queries, groups)
        again: list[_Query] = []
        done: list[dict[str, Any]] = []
        throttled: list[float] = []
        answers = answer.per_request(len(queries), crids[-1])
        for query, (inner, error) in zip(queries, answers, strict=True):
            if error is None and inner is not None:
                done += self._matched(query, (inner.body or {}).get("value") or [], groups)
            elif isinstance(error, Throttled):
                throttled.append(error.retry_after or 0.0)
                again.append(query)
            elif isinstance(error, ServerError | NoAnswer):
                again += self._later([query], groups)
            elif isinstance(error, Forbidden | Unauthorized):
                self.control.trip(AuthError(_refused(error)))
            elif isinstance(error, BadRequest) and len(query.values) > 1:
                # in halves, to find the value Graph refuses
                again += [_Query(query.stage, list(v)) for v in halves(query.values)]
            elif error is not None:
                reason = f"Graph refused the look-up ({error.status} {error.code}: {error.message})"
                done += [
                    self._outcome(row, NOT_FOUND, reason=reason)
                    for v in query.values
                    for row in groups[(query.stage.kind, v)]
                ]
        self.caller.inner_throttled(LOOKUP.budget, throttled, left_at[-1])
        self._settle(done)
        return again

    def _later(self, queries: list[_Query], groups: Groups) -> list[_Query]:
        """Queries to retry after a back-off, until the retry time (from the first send) runs
        out."""
        retry = self.caller.retry
        now = time.monotonic()
        again, lost = [], []
        for query in queries:
            query.tries += 1
            at = retry.next_try(query.first_sent or now, query.tries, now)
            if at is None:
                lost += [
                    self._outcome(row, NOT_LOOKED_UP, reason=NO_ANSWER_REASON)
                    for v in query.values
                    for row in groups[(query.stage.kind, v)]
                ]
                continue
            query.not_before = at
            again.append(query)
        self._settle(lost, cache=False)
        return again

    def _matched(
        self, query: _Query, users: list[dict[str, Any]], groups: Groups
    ) -> list[dict[str, Any]]:
        done = []
        stage = query.stage
        for value in query.values:
            found = [u for u in users if stage.matches(u, value)]
            group = groups[(stage.kind, value)]
            if len(found) > 1:
                ids = ", ".join(str(u.get("id")) for u in found[:5])
                reason = (
                    f"{len(found)} users match this {stage.field} ({ids}); neither is sent: "
                    "act on the right one by object ID"
                )
                done += [self._outcome(r, AMBIGUOUS, stage=stage, reason=reason) for r in group]
            elif found:
                user = found[0]
                guest = (
                    user.get("userType") == "Guest"
                    or "#ext#" in str(user.get("userPrincipalName", "")).lower()
                )
                outcome = GUEST if guest else RESOLVED
                done += [self._outcome(r, outcome, stage=stage, user=user) for r in group]
        return done

    def _outcome(
        self,
        row: dict[str, Any],
        outcome: str,
        *,
        stage: Stage | None = None,
        user: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        user = user or {}
        return {
            "input_value": row["input_value"],
            "kind": row["kind"],
            "user_id": str(user["id"]).lower() if user.get("id") else None,
            "user_principal_name": user.get("userPrincipalName"),
            "matched_by": stage.matched_by if stage else None,
            "outcome": outcome,
            "reason": reason
            or ("a guest (B2B) user of another tenant" if outcome == GUEST else None),
            "source_file": row.get("source_file"),
            "source_row": row.get("source_row"),
            "user_type": user.get("userType") or ("Guest" if outcome == GUEST else None),
            "account_enabled": user.get("accountEnabled"),
            "on_premises_sync": user.get("onPremisesSyncEnabled"),
        }

    def _settle(self, done: list[dict[str, Any]], *, cache: bool = True) -> None:
        """Keep outcomes; the ledger caches them unless Graph did not answer (a resume then
        looks those up again instead of trusting a not_found nobody observed)."""
        if not done:
            return
        for item in done:
            self.outcomes[(item["kind"], item["input_value"])] = item
        if cache:
            self.record(pl.DataFrame(done, schema=LOOKUP_COLUMNS, orient="row"))
        self.observer(Event.LOOKUP, settled=len(done), total=len(self.outcomes))


def _refused(exc: GraphError) -> str:
    return refused("the directory look-up", exc, READ_PERMISSION, " (nothing was written)")
