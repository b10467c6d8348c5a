"""--since: when the attacker became active, one option with one meaning and one parser.

What reads it (sign-ins after it, authentication methods registered after it) reads one value,
``Window.start``. A run records it in its ledger, so a resume days later keeps the same window.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from batcher.errors import ConfigError

SIGN_IN_LOGS_KEPT = timedelta(days=30)  # Entra keeps sign-in logs 30 days
_DURATION = re.compile(r"^\s*(\d+)\s*([dhm])\s*$", re.IGNORECASE)
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
EXAMPLES = "e.g. 7d, 36h, 90m, or 2026-11-29T08:00Z"
META_START, META_GIVEN = "since", "since_given"


@dataclass(frozen=True)
class Window:
    """The incident window: from ``start`` (aware, UTC) until now; ``given``: as typed."""

    start: datetime
    given: str
    recorded: bool = False  # taken from the ledger: its first run fixed it

    def shown(self) -> str:
        """The start as an absolute UTC time, e.g. 2026-11-29T08:00:00Z."""
        return self.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def line(self) -> str:
        """The plan's and the gate's line."""
        kept = "; recorded in the ledger by its first run: a resume keeps it" * self.recorded
        return f"incident window: since {self.shown()} (--since {self.given}){kept}"

    def record(self, set_meta: Callable[[str, str], None]) -> None:
        set_meta(META_START, self.shown())
        set_meta(META_GIVEN, self.given)


def parse_since(text: str, now: datetime, keep: timedelta | None = None) -> Window:
    """``--since``: a duration back from ``now`` (7d, 36h, 90m) or a point in time (ISO 8601;
    without a zone, UTC). Refuses a time in the future, and one older than ``keep`` (the
    sign-in logs' 30 days, where sign-ins are read)."""
    given = text.strip()
    match = _DURATION.match(given)
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        start = now - timedelta(**{_UNITS[unit]: amount})
    else:
        try:
            start = datetime.fromisoformat(given.replace("z", "Z"))
        except ValueError:
            raise ConfigError(
                f"--since {text!r} is neither a duration nor an ISO 8601 time; {EXAMPLES}"
            ) from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)  # no zone means UTC
    start = start.astimezone(UTC)
    window = Window(start, given)
    if start > now:
        raise ConfigError(
            f"--since {given} ({window.shown()}) is in the future; give when the attacker "
            f"became active, {EXAMPLES}"
        )
    if keep is not None and now - start > keep:
        raise ConfigError(
            f"--since {given} ({window.shown()}) is more than {keep.days} days ago: sign-in "
            f"logs are kept {keep.days} days; give a later start"
        )
    return window


def recorded_window(meta: Mapping[str, str]) -> Window | None:
    """The window a ledger's first run recorded; None when it recorded none."""
    start = meta.get(META_START)
    if start is None:
        return None
    at = datetime.fromisoformat(start.replace("Z", "+00:00"))
    return Window(at, meta.get(META_GIVEN, start), recorded=True)


def settle_window(given: Window | None, recorded: Window | None) -> Window | None:
    """The window of a run on a ledger: the recorded one on a resume (the same --since, or
    none given); a different --since is refused in one line."""
    if recorded is None:
        return given
    if given is None or given.start == recorded.start or given.given == recorded.given:
        return recorded
    raise ConfigError(
        f"--since {given.given} ({given.shown()}) differs from the window this ledger's first "
        f"run recorded, since {recorded.shown()} (--since {recorded.given}); a resume keeps "
        "one window: give the same --since or none, or use a new --ledger for another window"
    )
