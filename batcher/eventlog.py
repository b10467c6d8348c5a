"""Events of a run, for whoever watches: the --log-file audit trail, the console, the progress bar.

The library tells what happens through one observer, ``observer(event, **fields)``; it never
prints. The log file gets one JSON line per event it keeps, and never a secret.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from batcher.platform import append_private

# Events the --log-file keeps: requests, state changes, look-ups and the run's start and end.
LOGGED = frozenset(
    {"request", "state", "lookup", "run_started", "run_finished", "declined", "unreachable"}
)


class Observer(Protocol):
    def __call__(self, event: str, **fields: Any) -> None: ...


def no_events(event: str, **fields: Any) -> None:
    """The observer used when nobody watches."""


class Fanout:
    """One observer that hands every event to several."""

    def __init__(self, *observers: Observer) -> None:
        self._observers = observers

    def __call__(self, event: str, **fields: Any) -> None:
        for observer in self._observers:
            observer(event, **fields)


class EventLog:
    """Appends JSON lines to ``path`` (created owner-readable only); flushed line by line so a
    killed run leaves every event up to the kill. Use it with ``contextlib.closing``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = append_private(path)

    def __call__(self, event: str, **fields: Any) -> None:
        if event not in LOGGED:
            return
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
        record.update(fields)
        self._file.write(json.dumps(record, default=str) + "\n")

    def close(self) -> None:
        self._file.close()
