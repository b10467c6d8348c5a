"""The --log-file audit trail: one JSON line per request and per state change, never a secret."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol


class EventSink(Protocol):
    def __call__(self, event: str, **fields: Any) -> None: ...


def no_events(event: str, **fields: Any) -> None:
    """The sink used when no --log-file was asked for."""


class EventLog:
    """Appends JSON lines to ``path`` (created owner-readable only); flushed line by line so
    a killed run leaves every event up to the kill."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self.path = path
        self._file = os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
        record.update(fields)
        self._file.write(json.dumps(record, default=str) + "\n")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
