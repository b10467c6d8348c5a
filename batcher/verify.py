"""Read back what Identity Protection shows for the IDs a ledger settled, within the rate budget."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import polars as pl

from batcher.errors import GraphError, Throttled
from batcher.pacer import Pacer
from batcher.retries import retry_policy

if TYPE_CHECKING:  # imported only for types: httpx loads when a run sends, not at start-up
    from batcher.graph import GraphClient

# The riskState each action leads to.
EXPECTED_STATE = {"confirmCompromised": "confirmedCompromised", "dismiss": "dismissed"}
CONFIRMED, PROCESSING, NOT_CONFIRMED = "confirmed", "processing", "not_confirmed"
VERIFY_COLUMNS = {
    "user_id": pl.String,
    "verify_status": pl.String,
    "risk_state": pl.String,
    "is_processing": pl.Boolean,
    "checked_at": pl.String,
}

T = TypeVar("T")


@dataclass(frozen=True)
class Verification:
    """Each ID's status as read back, and how many read requests it took."""

    frame: pl.DataFrame  # VERIFY_COLUMNS, one row per ID asked about
    requests: int

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((CONFIRMED, PROCESSING, NOT_CONFIRMED), 0)
        for status, n in self.frame.group_by("verify_status").len().rows():
            counts[status] = n
        return counts


class Verifier:
    """Per-user reads for a few IDs; for many, the filtered list in pages of 500, then per-user
    reads only for the IDs the list lacks (to tell "still processing" from "not confirmed")."""

    def __init__(
        self,
        client: GraphClient,
        pacer: Pacer,
        *,
        retry_for_seconds: float,
        per_user_up_to: int = 25,
        look_up_missing_up_to: int = 300,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._client = client
        self._pacer = pacer
        self._retry_for_seconds = retry_for_seconds
        self._per_user_up_to = per_user_up_to
        self._look_up_missing_up_to = look_up_missing_up_to
        self._sleep = sleep
        self.requests = 0

    async def verify(self, user_ids: Sequence[str], action: str) -> Verification:
        expected = EXPECTED_STATE[action]
        rows: dict[str, tuple[str, str | None, bool | None]] = {}
        missing = list(user_ids)
        if len(user_ids) > self._per_user_up_to:
            listed = await self._list(expected)
            wanted = set(user_ids)
            for user in listed:
                uid = str(user.get("id", "")).lower()
                if uid in wanted:
                    rows[uid] = (CONFIRMED, expected, bool(user.get("isProcessing")))
            missing = [uid for uid in user_ids if uid not in rows]
        if len(missing) <= self._look_up_missing_up_to:
            for uid in missing:
                found = await self._paced(functools.partial(self._get, uid))
                rows[uid] = _status(found, expected)
        else:
            for uid in missing:
                rows[uid] = (NOT_CONFIRMED, None, None)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        frame = pl.DataFrame(
            [(uid, *rows[uid], stamp) for uid in user_ids], schema=VERIFY_COLUMNS, orient="row"
        )
        return Verification(frame, self.requests)

    async def _get(self, user_id: str, client_request_id: str) -> dict[str, Any] | None:
        return await self._client.get_risky_user(user_id, client_request_id)

    async def _list(self, state: str) -> list[dict[str, Any]]:
        users: list[dict[str, Any]] = []
        link: str | None = None
        while True:

            async def page(crid: str, link: str | None = link) -> Any:
                return await self._client.list_risky_users(state, crid, link)

            batch, link = await self._paced(page)
            users += batch
            if link is None:
                return users

    async def _paced(self, call: Callable[[str], Awaitable[T]]) -> T:
        """One read through the shared pacer, retried like the sends are."""
        policy = retry_policy(self._retry_for_seconds, sleep=self._sleep)
        async for attempt in policy:
            with attempt:
                started = await self._pacer.acquire()
                self.requests += 1
                try:
                    result = await call(str(uuid.uuid4()))
                except Throttled:
                    self._pacer.throttled(started)
                    raise
                except GraphError as exc:
                    if exc.retry_after is not None:
                        self._pacer.hold(exc.retry_after)
                    raise
                self._pacer.succeeded()
                return result
        raise AssertionError("unreachable: tenacity re-raises the last error")


def _status(user: dict[str, Any] | None, expected: str) -> tuple[str, str | None, bool | None]:
    if user is None:
        return NOT_CONFIRMED, None, None
    state = user.get("riskState")
    processing = bool(user.get("isProcessing"))
    if state == expected:
        return CONFIRMED, state, processing
    return (PROCESSING if processing else NOT_CONFIRMED), state, processing
