"""What every sender lane shares: the ledger, the client, the paced caller and the run's control."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batcher.actions import Action
from batcher.calls import Caller
from batcher.control import Control
from batcher.errors import BatcherError
from batcher.eventlog import Event, Observer
from batcher.graph import GraphClient
from batcher.ledger import Ledger, StepState
from batcher.passwords import Secret, secrets_in
from batcher.workers.commits import GroupCommit

# (user_id, action, state, secret): a step whose request carried a secret was done or unknown
SecretSink = Callable[[str, str, StepState, Secret], None]


@dataclass(frozen=True)
class Work:
    """One action's users to send in this run, in input order."""

    action: Action
    user_ids: Sequence[str]
    # users whose state before the run the lane reads first (already as the action leaves
    # them: recorded in the ledger's ``before``, so that an undo leaves them so)
    read_before: Sequence[str] = ()


@dataclass(frozen=True)
class LaneContext:
    """The parts every lane of a run uses; each lane sends through ``max_in_flight`` workers."""

    ledger: Ledger
    client: GraphClient
    caller: Caller
    max_in_flight: int
    keep_secret: SecretSink | None = None  # --passwords-out; None: secrets are dropped
    control: Control = field(kw_only=True)  # the run's: stops, breaker, tally, observer
    commit: GroupCommit = field(init=False)  # the ledger's writes of many tasks, together

    def __post_init__(self) -> None:
        object.__setattr__(self, "commit", GroupCommit(self.ledger))

    def secret_set(
        self, user_id: str, action: str, state: StepState, body: Mapping[str, Any]
    ) -> None:
        """A request carrying ``body`` was applied (or may have been): hand its secret over."""
        if self.keep_secret is None:
            return
        for secret in secrets_in(body):
            self.keep_secret(user_id, action, state, secret)

    @property
    def observer(self) -> Observer:
        return self.control.observer

    @property
    def stop_asked(self) -> bool:
        return self.control.stop_asked

    @property
    def tripped(self) -> BatcherError | None:
        return self.control.tripped

    def trip(self, exc: BatcherError) -> None:
        self.control.trip(exc)

    def next_try(self, first_sent: float, tries: int, now: float, *, paced: bool) -> float | None:
        """When to send again a request inside a JSON batch (RetrySettings.next_try)."""
        return self.caller.retry.next_try(first_sent, tries, now, paced=paced)

    def settled(self, action: str, state: StepState, n: int, batch: int | None = None) -> None:
        """Count settled steps, and tell the observer (a state change, then progress)."""
        self.control.count(action, state.value, n)
        self.observer(Event.STATE, batch=batch, action=action, ids=n, state=state.value)
        self.control.progress()

    def uncount(self, action: str, state: StepState, n: int) -> None:
        """Take back ``n`` steps counted in ``state`` (they are planned again)."""
        self.control.count(action, state.value, -n)

    def sending(self, action: str | None, n: int, batch: int) -> None:
        self.observer(Event.STATE, batch=batch, action=action, ids=n, state=StepState.SENDING.value)
