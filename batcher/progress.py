"""Live progress: a rich bar on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from batcher.report import format_duration, say
from batcher.sender import Tally


class RunProgress:
    """Call it with the tally after each settled batch; use it as a context manager."""

    def __init__(
        self, console: Console, total: int, batch_size: int, *, every: float = 5.0
    ) -> None:
        self._console = console
        self._total = total
        self._batch_size = batch_size
        self._every = every
        self._last = time.monotonic()
        self._bar: Progress | None = None
        self._task = None
        if console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]sending[/]"),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,} IDs"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self._task = self._bar.add_task("send", total=total, detail="starting")

    def __enter__(self) -> RunProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, tally: Tally) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=tally.settled, detail=self.describe(tally))
            return
        now = time.monotonic()
        if tally.settled < self._total and now - self._last < self._every:
            return
        self._last = now
        say(
            self._console,
            f"progress: {tally.settled:,}/{self._total:,} IDs; " + self.describe(tally),
        )

    def describe(self, tally: Tally) -> str:
        left = max(0, self._total - tally.settled)
        eta = (left / self._batch_size) / tally.rate if tally.rate > 0 else 0.0
        return (
            f"{tally.confirmed:,} confirmed, {tally.failed:,} failed, {tally.unknown:,} unsure; "
            f"{tally.rate:.2f} req/s, {tally.throttled:,} throttled; "
            f"ETA {format_duration(eta) if left else '0s'}"
        )
