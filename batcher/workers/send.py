"""Send a run's steps: one lane per budget, all at once, sharing one stop and one breaker."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from batcher.actions import Shape
from batcher.calls import StopSignal
from batcher.errors import BatcherError, LedgerError, first_leaf
from batcher.ledger import StepState
from batcher.workers.lanes import LaneContext, Work
from batcher.workers.lists import HOPELESS_AFTER, ListLane, halves
from batcher.workers.per_user import FORBIDDEN_IN_A_ROW, PerUserLane

__all__ = [
    "FORBIDDEN_IN_A_ROW",
    "HOPELESS_AFTER",
    "LaneContext",
    "SendOutcome",
    "Work",
    "halves",
    "send",
]


@dataclass(frozen=True)
class SendOutcome:
    """What one send did: settled steps per action and state, and its requests."""

    counts: dict[str, dict[str, int]]
    requests: int
    throttled: int
    seconds: float
    stopped_by: BatcherError | None
    interrupted: bool

    def of(self, action: str, state: StepState) -> int:
        return self.counts.get(action, {}).get(state.value, 0)


async def send(
    lanes: LaneContext, works: Sequence[Work], batch_size: int, stop: StopSignal | None = None
) -> SendOutcome:
    """Send every work item: the Identity Protection lane and the directory lane run at the
    same time, each paced on its own budget. A failed request is data in the ledger."""
    control = lanes.control
    started = time.monotonic()
    per_user = [w for w in works if w.action.shape is Shape.PER_USER and w.user_ids]
    try:
        with contextlib.ExitStack() as stack:
            if stop is not None:
                stack.enter_context(stop.attached(control))
            with control.scope():
                async with anyio.create_task_group() as lanes_group:
                    for work in works:
                        if work.action.shape is Shape.ID_LIST and work.user_ids:
                            lane = ListLane(lanes, work.action, batch_size)
                            lanes_group.start_soon(lane.run, work.user_ids, work.read_before)
                    if per_user:
                        lanes_group.start_soon(PerUserLane(lanes, per_user).run)
    except* LedgerError as group:
        raise first_leaf(group) from None
    for action, n in lanes.ledger.recover().items():  # what a stop or breaker cut off
        control.count(action, StepState.UNKNOWN.value, n)
    tally = control.tally
    return SendOutcome(
        counts={a: dict(per) for a, per in tally.settled.items()},
        requests=tally.requests,
        throttled=tally.throttled,
        seconds=time.monotonic() - started,
        stopped_by=control.tripped,
        interrupted=control.stop_asked,
    )
