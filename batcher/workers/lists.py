"""The Identity Protection lane: lists of up to 60 user IDs per request, one request a second."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from batcher.actions import Action
from batcher.calls import Call, NotSent
from batcher.errors import AuthError, BadRequest, GraphError
from batcher.graph import answer_of
from batcher.ledger import Answer, StepState
from batcher.retries import RETRYABLE
from batcher.workers.before import already_so
from batcher.workers.lanes import LaneContext

# After this many batches were split down to single IDs and every one was refused, a 400 is
# taken to be about the request, not the IDs: later batches fail whole instead of costing
# 2n-1 requests each at one request a second.
HOPELESS_AFTER = 2


def halves(ids: Sequence[str]) -> tuple[Sequence[str], Sequence[str]]:
    """Split a refused batch in two, to find the IDs Graph refuses."""
    middle = len(ids) // 2
    return ids[:middle], ids[middle:]


@dataclass
class _Batch:
    """One request's IDs and, once its intent is recorded, its ledger ids."""

    ids: Sequence[str]
    fields: dict[str, Any] = field(default_factory=dict)
    batch_id: int | None = None
    attempt_id: int = 0


class ListLane:
    """Sends one action to lists of IDs; a 400 halves the batch until the refused IDs are found."""

    def __init__(self, lanes: LaneContext, action: Action, batch_size: int) -> None:
        self.lanes = lanes
        self.action = action
        self.size = min(batch_size, action.max_ids)
        self._hopeless = 0

    async def run(self, user_ids: Sequence[str], read_before: Sequence[str] = ()) -> None:
        if read_before:  # on this lane's budget and control, before its first send
            await self._read_before(read_before)
        send, receive = anyio.create_memory_object_stream[Sequence[str]](0)
        async with anyio.create_task_group() as workers:
            for _ in range(self.lanes.max_in_flight):
                workers.start_soon(self._worker, receive.clone())
            receive.close()
            async with send:
                for start in range(0, len(user_ids), self.size):
                    if self.lanes.stop_asked:
                        break
                    await send.send(user_ids[start : start + self.size])

    async def _read_before(self, user_ids: Sequence[str]) -> None:
        """Record which ``user_ids`` already read as the action leaves them (confirmed
        compromised before the run). A read a stop, a breaker or Graph cut short records none."""
        lanes = self.lanes
        found = await already_so(lanes.client, lanes.caller, self.action, user_ids, 0)
        lanes.ledger.record_before(self.action.name, sorted(found), self.action.check.yes)

    async def _worker(self, batches: anyio.abc.ObjectReceiveStream[Sequence[str]]) -> None:
        async with batches:
            async for ids in batches:
                if self.lanes.stop_asked:
                    return
                await self._send(ids, whole=True)

    async def _send(self, ids: Sequence[str], *, whole: bool) -> int:
        """Send one batch until it settles; returns how many of its IDs Graph applied."""
        batch = _Batch(ids, {"action": self.action.name, "ids": len(ids)})
        call = Call(
            self.action.budget,
            send=lambda crid: self.lanes.client.post_ids(self.action, ids, crid),
            permission=self.action.permission,
            before=lambda crid: self._intent(batch, crid),
            after=lambda answer, exc: self._answer(batch, answer, exc),
            fields=batch.fields,
        )
        try:
            await self.lanes.caller(call)
        except NotSent:
            self._release(batch)
            return 0
        except AuthError:  # sign-in failed while renewing the token (the run is tripped)
            self._release(batch)
            return 0
        except BadRequest as exc:
            if len(ids) > 1 and self._hopeless < HOPELESS_AFTER:
                return await self._split(batch, whole)
            self._fail(batch, exc)  # one ID, or 400s that refuse whole batches
            return 0
        except GraphError as exc:
            if self.lanes.tripped is not None or isinstance(exc, RETRYABLE):
                self._release(batch)  # stopped, or out of retry time: unknown or planned
            else:
                self._fail(batch, exc)
            return 0
        self.lanes.settled(self.action.name, StepState.DONE, len(ids), batch.batch_id)
        return len(ids)

    async def _split(self, batch: _Batch, whole: bool) -> int:
        assert batch.batch_id is not None
        self.lanes.ledger.split_batch(batch.batch_id)
        first, second = halves(batch.ids)
        done = await self._send(first, whole=False) + await self._send(second, whole=False)
        if whole and done == 0:  # every ID refused: the 400 is not about the IDs
            self._hopeless += 1
        return done

    def _intent(self, batch: _Batch, crid: str) -> None:
        ledger = self.lanes.ledger
        if batch.batch_id is None:
            keys = [(uid, self.action.name) for uid in batch.ids]
            batch.batch_id, batch.attempt_id = ledger.start_batch(self.action.name, keys, crid)
            batch.fields["batch"] = batch.batch_id
            self.lanes.sending(self.action.name, len(batch.ids), batch.batch_id)
        else:
            batch.attempt_id = ledger.start_attempt(batch.batch_id, crid)
        batch.fields["attempt"] = batch.attempt_id

    def _answer(self, batch: _Batch, answer: Answer, exc: GraphError | None) -> None:
        assert batch.batch_id is not None
        settle = StepState.DONE if exc is None else None
        self.lanes.ledger.finish_attempt(batch.batch_id, batch.attempt_id, answer, settle)

    def _fail(self, batch: _Batch, exc: GraphError) -> None:
        if batch.batch_id is not None:
            self.lanes.ledger.settle_batch(batch.batch_id, StepState.FAILED, answer_of(exc))
        self.lanes.settled(self.action.name, StepState.FAILED, len(batch.ids), batch.batch_id)

    def _release(self, batch: _Batch) -> None:
        """Stop trying: its IDs are unknown if a request may have applied them, else planned."""
        if batch.batch_id is None:
            return  # nothing left: its IDs stay planned
        unknown = self.lanes.ledger.release_batch(batch.batch_id)
        if unknown:
            self.lanes.settled(self.action.name, StepState.UNKNOWN, unknown, batch.batch_id)
