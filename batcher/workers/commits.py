"""Group commits: the ledger writes of many tasks that are ready at once, in one transaction.

A task hands its write over and waits until it is committed (an item's intent is on disk
before its request leaves; its answer before the task reads the user's items again). The
first write of a group waits one turn of the event loop, so that every task ready then adds
its own, then commits them all: one sync to disk for the lot instead of one each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import anyio
import anyio.lowlevel

from batcher.ledger import Ledger

T = TypeVar("T")


@dataclass
class _Write(Generic[T]):
    write: Callable[[], T]
    done: anyio.Event = field(default_factory=anyio.Event)
    result: T | None = None
    error: Exception | None = None


class GroupCommit:
    """``await commit(lambda: ledger.some_write(...))``: its result once committed, or its
    error (a write that fails fails alone; a commit that fails fails every write of it)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._pending: list[_Write[Any]] = []
        self._leading = False
        self.commits = 0
        self.writes = 0

    async def __call__(self, write: Callable[[], T]) -> T:
        entry: _Write[T] = _Write(write)
        self._pending.append(entry)
        with anyio.CancelScope(shield=True):  # a write handed over is committed, or fails
            if self._leading:
                await entry.done.wait()
            else:
                self._leading = True
                try:
                    await anyio.lowlevel.checkpoint()  # the other ready tasks add theirs
                finally:
                    self._leading = False
                group, self._pending = self._pending, []
                self._commit(group)
        if entry.error is not None:
            raise entry.error
        return cast(T, entry.result)

    def _commit(self, group: list[_Write[Any]]) -> None:
        try:
            with self.ledger.grouped():
                for entry in group:
                    try:
                        entry.result = entry.write()
                    except Exception as exc:  # handed back to its task
                        entry.error = exc
        except Exception as exc:  # the commit failed: none of it stands
            for entry in group:
                entry.error = entry.error or exc
        finally:
            self.commits += 1
            self.writes += len(group)
            for entry in group:
                entry.done.set()
