"""The directory lane: one request per user inside JSON batches of 20, each user's steps in order.

A user's step that must follow another (revoke-sessions after disable) waits until that one
settled. Done or failed for good, it is then sent (a failed disable still gets its revoke, and
the report says the account is still enabled). Unknown (Graph may or may not have applied it) or
back to planned (Graph never applied it), the steps that follow it stay planned in this run: a
revoke before the block is in place would let an attacker sign in again. A resume sends the
first step again, then the rest. Each inner answer is judged on its own. A batch holds steps of
one budget, the one it is paced on: actions on other budgets ride in batches of their own.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from batcher.actions import Action, Budget, comes_after, permission_for
from batcher.calls import Call, NotSent, refused
from batcher.errors import (
    AuthError,
    Forbidden,
    GraphError,
    NotFound,
    Throttled,
    Unauthorized,
)
from batcher.graph import MAX_BATCH, BatchAnswer, action_request, answer_of
from batcher.ledger import Answer, StepResult, StepState
from batcher.retries import RETRYABLE
from batcher.workers.children import discover_and_act
from batcher.workers.lanes import LaneContext, Work

# 403s in a row for one action, with no success yet: the permission is missing. Fewer may be
# administrators (Graph answers both the same), so each of those fails alone.
FORBIDDEN_IN_A_ROW = 20
STOP_CHECK = 0.1  # seconds: how soon an idle worker (waiting for a retry's back-off) sees a stop
LOOKAHEAD = 50 * MAX_BATCH  # ready steps looked through for a batch's worth on one budget


@dataclass
class _Step:
    user_id: str
    action: Action
    first_sent: float | None = None
    tries: int = 0
    body: Mapping[str, Any] | None = None  # made for this user (a secret_body), kept for retries

    @property
    def key(self) -> tuple[str, str]:
        return self.user_id, self.action.name


@dataclass
class _Chunk:
    steps: list[_Step]
    fields: dict[str, Any] = field(default_factory=dict)
    batch_id: int | None = None
    attempt_id: int = 0
    client_request_id: str = ""
    left_at: float = 0.0  # when its last try was granted its turn (the pacer's clock)

    @property
    def budget(self) -> Budget:
        """What the batch is paced on: its steps share their actions' budget (see ``_take``)."""
        return self.steps[0].action.budget

    @property
    def permission(self) -> str:
        """Each of its actions' own permission, named for the action when they differ."""
        return permission_for(s.action for s in self.steps)


class PerUserLane:
    """Sends per-user actions through JSON batches, each paced on its actions' own budget."""

    def __init__(self, lanes: LaneContext, works: Sequence[Work]) -> None:
        self.lanes = lanes
        self.ready: deque[_Step] = deque()
        self.later: list[tuple[float, int, _Step]] = []  # (not before, order, step) to retry
        self.blocked: dict[tuple[str, str], list[_Step]] = defaultdict(list)
        self.in_progress = 0
        self._order = 0
        self._changed = anyio.Event()
        self._forbidden: dict[str, list[tuple[str, str]]] = defaultdict(list)  # 403s in a row
        self._proven: set[str] = set()  # actions Graph accepted at least once in this run
        self._missing_permission: str | None = None  # the action whose 403s tripped the run
        self._budgets = {w.action.budget for w in works}
        # users listing and acting on their items at once, per budget (each sends one request
        # at a time): enough to keep the budget busy, not so many they queue for connections
        self._listing = {
            b: anyio.Semaphore(lanes.caller.users_at_once(b))
            for b in {w.action.budget for w in works if w.action.lists is not None}
        }
        pending = {w.action.name: set(w.user_ids) for w in works}
        for work in works:  # in the action table's order: disable before revoke-sessions
            chain = comes_after(work.action)
            for uid in work.user_ids:
                step = _Step(uid, work.action)
                first = next((name for name in chain if uid in pending.get(name, ())), None)
                if first is not None:
                    self.blocked[(uid, first)].append(step)
                else:
                    self.ready.append(step)

    async def run(self) -> None:
        async with anyio.create_task_group() as workers:
            self._group = workers  # steps that list their items run beside the batches
            for _ in range(self.lanes.caller.workers(self._budgets)):
                workers.start_soon(self._worker)
        self._release_waiting()

    async def _worker(self) -> None:
        while (steps := await self._take()) is not None:
            if steps[0].action.lists is not None:  # its own task: a slow budget holds no one
                self.in_progress += 1
                self._group.start_soon(self._discover, steps[0])
                continue
            self.in_progress += len(steps)
            try:
                await self._send(_Chunk(steps))
            finally:
                self.in_progress -= len(steps)
                self._notify()

    async def _take(self) -> list[_Step] | None:
        """Up to 20 steps that may go now; None when the lane is done or stopping."""
        while not self.lanes.stop_asked and self.lanes.tripped is None:
            now = time.monotonic()
            while self.later and self.later[0][0] <= now:
                self.ready.appendleft(heapq.heappop(self.later)[2])
            if self.ready:
                return self._one_budget()
            if not self.later and not self.blocked and not self.in_progress:
                return None
            wait = self.later[0][0] - now if self.later else math.inf
            with anyio.move_on_after(min(wait, STOP_CHECK)):
                await self._changed.wait()
        return None

    def _one_budget(self) -> list[_Step]:
        """Up to 20 ready steps on the first one's budget, in order; the others stay first in
        line for the next batch."""
        if self.ready[0].action.lists is not None:
            return [self.ready.popleft()]
        budget = self.ready[0].action.budget
        taken: list[_Step] = []
        passed: list[_Step] = []
        while self.ready and len(taken) < MAX_BATCH and len(passed) < LOOKAHEAD:
            step = self.ready.popleft()
            (taken if step.action.budget is budget else passed).append(step)
        self.ready.extendleft(reversed(passed))
        return taken

    async def _discover(self, step: _Step) -> None:
        """List the user's items, then act on each (workers/children.py)."""
        try:
            async with self._listing[step.action.budget]:
                state = await discover_and_act(self.lanes, step.user_id, step.action)
            if state is StepState.PLANNED:
                self._hold_back(step)
            else:
                self._settle(step, state, None)
        finally:
            self.in_progress -= 1
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _send(self, chunk: _Chunk) -> None:
        for step in chunk.steps:  # one secret per user per run: every retry sends the same
            if step.body is None and step.action.secret_body is not None:
                step.body = step.action.secret_body()
        requests = [
            action_request(s.action, s.user_id, str(n), s.body) for n, s in enumerate(chunk.steps)
        ]
        chunk.fields.update(
            action="+".join(sorted({s.action.name for s in chunk.steps})), ids=len(chunk.steps)
        )
        call = Call(
            chunk.budget,
            send=lambda crid: self.lanes.client.batch(requests, crid),
            permission=chunk.permission,
            cost=len(chunk.steps),
            before=lambda crid: self._intent(chunk, crid),
            after=lambda answer, exc: self._outer_failed(chunk, answer, exc),
            fields=chunk.fields,
        )
        try:
            result = await self.lanes.caller(call)
        except NotSent:
            self.ready.extendleft(reversed(chunk.steps))  # not sent: stays planned
            return
        except AuthError:  # sign-in failed while renewing the token (the run is tripped)
            self._give_up(chunk)
            return
        except GraphError as exc:
            if self.lanes.tripped is not None or isinstance(exc, RETRYABLE):
                self._give_up(chunk)  # out of retry time: unknown or planned
            else:  # the whole batch refused (a 400 for its shape): nothing was applied
                assert chunk.batch_id is not None
                self.lanes.ledger.settle_batch(chunk.batch_id, StepState.FAILED, answer_of(exc))
                for step in chunk.steps:
                    self._settle(step, StepState.FAILED, chunk.batch_id)
            return
        self._inner_answers(chunk, result)

    def _intent(self, chunk: _Chunk, crid: str) -> None:
        ledger = self.lanes.ledger
        now = time.monotonic()
        chunk.client_request_id = crid
        chunk.left_at = self.lanes.caller.pacer(chunk.budget).now()
        for step in chunk.steps:
            step.first_sent = step.first_sent or now
            step.tries += 1
        if chunk.batch_id is None:
            keys = [s.key for s in chunk.steps]
            chunk.batch_id, chunk.attempt_id = ledger.start_batch(None, keys, crid)
            chunk.fields["batch"] = chunk.batch_id
            self.lanes.sending(chunk.fields["action"], len(chunk.steps), chunk.batch_id)
        else:
            chunk.attempt_id = ledger.start_attempt(chunk.batch_id, crid)
        chunk.fields["attempt"] = chunk.attempt_id

    def _outer_failed(self, chunk: _Chunk, answer: Answer, exc: GraphError | None) -> None:
        if exc is not None:  # an answer for the whole batch; its steps may be sent again
            assert chunk.batch_id is not None
            self.lanes.ledger.finish_attempt(chunk.batch_id, chunk.attempt_id, answer, None)

    def _inner_answers(self, chunk: _Chunk, result: BatchAnswer) -> None:
        assert chunk.batch_id is not None
        crid = chunk.client_request_id
        results, again = [], []
        throttled: list[float] = []
        answers = result.per_request(len(chunk.steps), crid)
        for step, (inner, exc) in zip(chunk.steps, answers, strict=True):
            answer = answer_of(
                exc, inner.status if inner else 0, inner.request_id if inner else None
            )
            if isinstance(exc, Throttled):
                throttled.append(exc.retry_after or 0.0)
            verdict = self._judge(step, exc)
            answer = _explained(answer, exc, verdict, step.action)
            results.append(StepResult(step.key, answer, verdict))
            if verdict is None:
                again.append((step, exc))
        outer = answer_of(None, result.status, result.request_id)
        self.lanes.ledger.finish_steps(chunk.batch_id, chunk.attempt_id, outer, results)
        self.lanes.caller.inner_throttled(chunk.budget, throttled, chunk.left_at)
        for result_, step in zip(results, chunk.steps, strict=True):
            if result_.settle is not None:
                self._settle(step, result_.settle, chunk.batch_id)
        if self._missing_permission is not None:
            self._not_their_fault(self._missing_permission)
        for step, exc in again:
            self._retry(step, exc, chunk.batch_id)

    def _judge(self, step: _Step, exc: GraphError | None) -> StepState | None:
        """The step's new state from its own answer; None to send it again."""
        name = step.action.name
        if exc is None:
            self._proven.add(name)
            self._forbidden[name].clear()
            return StepState.DONE
        if isinstance(exc, RETRYABLE):
            return None
        if isinstance(exc, Unauthorized):
            self.lanes.trip(AuthError(f"Graph refused the token inside a batch ({exc})"))
            return None
        if isinstance(exc, Forbidden):
            self._forbidden[name].append(step.key)
            if name not in self._proven and len(self._forbidden[name]) >= FORBIDDEN_IN_A_ROW:
                self._missing_permission = name
                needs = f"the Graph permission {step.action.permission}"
                why = refused(f"{name} for every user so far", exc, needs)
                self.lanes.trip(AuthError(why))
        return StepState.FAILED

    def _not_their_fault(self, action: str) -> None:
        """403s for every user: the app lacks the permission, so those users' steps did not
        fail for good; they go back to planned and the same command sends them once fixed."""
        keys = self._forbidden.pop(action, [])
        self._missing_permission = None
        if keys:
            self.lanes.ledger.replan(keys)
            self.lanes.uncount(action, StepState.FAILED, len(keys))

    def _retry(self, step: _Step, exc: GraphError | None, batch_id: int) -> None:
        assert step.first_sent is not None
        # a 429 waits on the shared pacer's hold, like everyone
        paced = isinstance(exc, Throttled) and exc.retry_after is not None
        at = self.lanes.next_try(step.first_sent, step.tries, time.monotonic(), paced=paced)
        if at is None:
            self._give_up_steps([step], batch_id)
            return
        self._order += 1
        heapq.heappush(self.later, (at, self._order, step))

    def _give_up(self, chunk: _Chunk) -> None:
        if chunk.batch_id is None:
            return  # nothing left: its steps stay planned
        self._give_up_steps(chunk.steps, chunk.batch_id)

    def _give_up_steps(self, steps: Sequence[_Step], batch_id: int | None) -> None:
        """Stop trying: unknown if a request may have applied the step, else planned."""
        states = self.lanes.ledger.release_steps([s.key for s in steps])
        for step in steps:
            state = states.get(step.key, StepState.PLANNED)
            if state == StepState.UNKNOWN:
                self._settle(step, StepState.UNKNOWN, batch_id)
            else:  # never applied: the steps that must follow it stay planned too
                self._hold_back(step)

    def _settle(self, step: _Step, state: StepState, batch_id: int | None) -> None:
        self.lanes.settled(step.action.name, state, 1, batch_id)
        if step.body is not None and state in (StepState.DONE, StepState.UNKNOWN):
            self.lanes.secret_set(step.user_id, step.action.name, state, step.body)
        if state in (StepState.DONE, StepState.FAILED, StepState.SKIPPED):
            self._unblock(step)
        else:  # unknown: it may not have applied, so what follows it stays planned
            self._hold_back(step)

    def _unblock(self, step: _Step) -> None:
        for waiting in self.blocked.pop(step.key, []):
            self.ready.append(waiting)
        self._notify()

    def _hold_back(self, step: _Step) -> None:
        """The steps waiting for ``step`` are not sent in this run: they stay planned, and so
        do the steps waiting for them (revoke-sessions after reset-password after disable)."""
        for waiting in self.blocked.pop(step.key, []):
            self._hold_back(waiting)
        self._notify()

    def _release_waiting(self) -> None:
        """At the end (a stop): steps waiting to be sent again go back to planned or unknown."""
        waiting = [s for _, _, s in self.later] + [s for s in self.ready if s.first_sent]
        self.later.clear()
        if waiting:
            self._give_up_steps(waiting, None)  # counts those that became unknown


def _explained(
    answer: Answer, exc: GraphError | None, verdict: StepState | None, action: Action
) -> Answer:
    """Say why one user failed where Graph's message does not."""
    if verdict != StepState.FAILED:
        return answer
    if isinstance(exc, NotFound):
        why = "no such user in the directory (deleted, or an ID from another tenant)"
    elif isinstance(exc, Forbidden):
        why = (  # Graph says the same for both causes: name both
            "refused for this user: either the user is an administrator, and changing one "
            "needs a privileged role (Privileged Authentication Administrator or Global "
            f"Administrator), or the app or user lacks the Graph permission {action.permission}"
        )
    else:
        return answer
    message = f"{why}; Graph said: {answer.error_message}" if answer.error_message else why
    return Answer(answer.outcome, answer.http_status, answer.error_code, message, answer.request_id)
