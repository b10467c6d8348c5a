"""Live progress: a rich bar on a terminal, a plain line every few seconds otherwise.

An observer: it starts on "sending", follows "progress" and stops on "sent". Rates and the ETA
come from what Graph accepted over the last minute, not from the pacer's target.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from batcher.cli.render import format_duration, say
from batcher.control import WINDOW, Tally
from batcher.eventlog import Event

# A rate is shown once it rests on this much: a few requests over a few seconds. Before, one
# request a few milliseconds after the start would read as hundreds a second.
MEASURE_REQUESTS = 3
MEASURE_SECONDS = 2.0


class RunProgress:
    def __init__(self, console: Console, *, every: float = 5.0) -> None:
        self._console = console
        self._every = every
        self._total = 0
        self._last = 0.0
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, event: Event, **fields: Any) -> None:
        if event is Event.SENDING:
            self._start(int(fields["total"]))
        elif event is Event.PROGRESS and self._total:
            self._update(fields["tally"])
        elif event is Event.SENT:
            self._stop()

    def _start(self, total: int) -> None:
        self._total = total
        self._last = time.monotonic()
        if not self._console.is_terminal:
            return
        self._bar = Progress(
            TextColumn("[bold]sending[/]"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} steps"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self._console,
            transient=False,
        )
        self._task = self._bar.add_task("send", total=total, detail="starting")
        self._bar.start()

    def _update(self, tally: Tally) -> None:
        settled = tally.total()
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=settled, detail=self.describe(tally))
            return
        now = time.monotonic()
        if settled < self._total and now - self._last < self._every:
            return
        self._last = now
        say(self._console, f"progress: {settled:,}/{self._total:,} steps; {self.describe(tally)}")

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar = None
        self._total = 0

    def describe(self, tally: Tally) -> str:
        parts = []
        for action, states in tally.settled.items():
            done, failed, unknown = (states.get(s, 0) for s in ("done", "failed", "unknown"))
            parts.append(f"{action} {done:,} done, {failed:,} failed, {unknown:,} unknown")
        per_second, requests = tally.rates()
        # tally.rates() measures with time.monotonic too: one clock for the span
        span = min(WINDOW, time.monotonic() - tally.started)
        long_enough = span >= MEASURE_SECONDS
        measured = long_enough and requests * span >= MEASURE_REQUESTS
        left = max(0, self._total - tally.total())
        if not left:
            eta = "0s"
        elif long_enough and per_second * span >= MEASURE_REQUESTS:
            eta = format_duration(left / per_second)
        else:
            eta = "not known yet"
        rate = f"{requests:.2f} req/s" if measured else "rate not measured yet"
        return (
            "; ".join(parts or ["nothing settled yet"])
            + f"; {rate}, {tally.throttled:,} throttled; ETA {eta}"
        )
