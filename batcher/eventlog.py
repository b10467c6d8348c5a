"""Events of a run, for whoever watches: the --log-file audit trail, the console, the progress bar.

The library tells what happens through one observer, ``observer(Event.X, **fields)``; it never
prints. The log file gets one JSON line per event it keeps, and never a secret.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from batcher.platform import append_private


class Event(StrEnum):
    """Every event the library tells (its fields in the comment). A name not here is a type
    error, and the CLI's edge refuses it: no event is dropped for a misspelling."""

    INPUTS = "inputs"  # files: list[FileNote], warnings: list[str]
    LEDGER = "ledger"  # path: str, exists: bool
    SIMULATOR = "simulator"  # url: str
    LOOKING_UP = "looking_up"  # identities: int
    LOOKUP = "lookup"  # settled: int, total: int
    DECLINED = "declined"  # command: str, to_send: int
    RUN_STARTED = "run_started"  # run: int, ledger: str, and the plan's counts
    SENDING = "sending"  # total: int, actions: dict[str, int]
    STATE = "state"  # batch: int | None, action: str | None, ids: int, state: str
    PROGRESS = "progress"  # tally: Tally
    REQUEST = "request"  # the call's fields, budget, outcome, status, ids, latency, rate
    SENT = "sent"
    RUN_FINISHED = "run_finished"  # run: int, and the result's counts
    REPORT_NOT_WRITTEN = "report_not_written"  # path: str, reason: str (the summary says it)
    STOPPING = "stopping"  # first: bool, in_flight: int, grace: float
    UNREACHABLE = "unreachable"  # host: str, cause: str, advice: str, stop_after: float


# Events the --log-file keeps: requests, state changes, look-ups and the run's start and end.
LOGGED = frozenset(
    {
        Event.REQUEST,
        Event.STATE,
        Event.LOOKUP,
        Event.RUN_STARTED,
        Event.RUN_FINISHED,
        Event.REPORT_NOT_WRITTEN,
        Event.DECLINED,
        Event.UNREACHABLE,
    }
)


class Observer(Protocol):
    def __call__(self, event: Event, **fields: Any) -> None: ...


def no_events(event: Event, **fields: Any) -> None:
    """The observer used when nobody watches."""


class Fanout:
    """One observer that hands every event to several."""

    def __init__(self, *observers: Observer) -> None:
        self._observers = observers

    def __call__(self, event: Event, **fields: Any) -> None:
        for observer in self._observers:
            observer(event, **fields)


class EventLog:
    """Appends JSON lines to ``path`` (created owner-readable only); flushed line by line so a
    killed run leaves every event up to the kill. Use it with ``contextlib.closing``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = append_private(path)

    def __call__(self, event: Event, **fields: Any) -> None:
        if event not in LOGGED:
            return
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event.value,
        }
        record.update(fields)
        self._file.write(json.dumps(record, default=str) + "\n")

    def close(self) -> None:
        self._file.close()
