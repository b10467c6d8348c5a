"""`batcher status`: a ledger's counts per action and state, and how its last run ended."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batcher.ledger import Ledger, WriterLock
from batcher.platform import in_folder


@dataclass(frozen=True)
class Status:
    """What a ledger holds; ``live`` when a batcher writes it right now."""

    path: Path
    meta: dict[str, str]
    live: bool
    users: int
    counts: dict[str, dict[str, int]]  # action -> state -> steps
    lookups: dict[str, int]  # outcome -> identities
    last_run: dict[str, object] | None
    killed: bool  # the last run ended without finishing, and nothing writes the ledger now

    @property
    def resume(self) -> str | None:
        """The command that resumes the last run, as it was typed."""
        if self.last_run is None:
            return None
        line = self.last_run.get("command_line")
        if not line:
            return None
        cwd = self.last_run.get("cwd")
        return in_folder(str(cwd), str(line)) if cwd else str(line)


def status(path: Path) -> Status:
    live = WriterLock.held(path)
    reader = Ledger.open_existing(path)
    try:
        last = reader.last_run()
        return Status(
            path=path,
            meta=reader.meta(),
            live=live,
            users=reader.users(),
            counts=reader.counts(live=live),
            lookups=reader.lookup_outcomes(),
            last_run=last,
            killed=bool(last and last.get("finished_at") is None and not live),
        )
    finally:
        reader.close()
