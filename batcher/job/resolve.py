"""`batcher resolve`: only look identities up, and write the table; no write to Graph, no ledger."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import polars as pl

from batcher.eventlog import Event
from batcher.inputs import read_inputs
from batcher.job.lookup import look_up, to_look_up
from batcher.job.session import Route, Session
from batcher.job.setup import Job
from batcher.job.summary import Inputs
from batcher.ledger import LOOKUP_COLUMNS
from batcher.report.files import check_report_path, write_report

RESOLVE_COLUMNS = list(LOOKUP_COLUMNS)  # the table's columns: one look-up outcome a row


@dataclass(frozen=True)
class ResolveOptions:
    inputs: tuple[Path, ...]
    out: Path
    column: str | None = None
    sheet: str | None = None


@dataclass(frozen=True)
class Resolved:
    """Where the table went, and the counts (``looked_up`` counts object IDs too here)."""

    out: str
    inputs: Inputs

    def to_json(self) -> dict[str, object]:
        return {"out": self.out, **asdict(self.inputs)}

    def result(self) -> dict[str, object]:
        """What --json prints of a resolve (batcher.cli.schema.ResolveResult)."""
        return {"out": self.out, "inputs": asdict(self.inputs)}


def resolve(job: Job, options: ResolveOptions, route: Route | None = None) -> Resolved:
    check_report_path(options.out)
    read = read_inputs(options.inputs, options.column, options.sheet)
    job.observer(Event.INPUTS, files=read.files, warnings=read.warnings)
    wanted = to_look_up(read, object_ids=True)
    table, requests = anyio.run(_look_up, job, wanted, route)
    write_report(table, options.out)
    users = table.filter(pl.col("user_id").is_not_null()).get_column("user_id").n_unique()
    return Resolved(str(options.out), Inputs.of(read, table, requests, users))


async def _look_up(job: Job, wanted: pl.DataFrame, route: Route | None) -> tuple[pl.DataFrame, int]:
    if wanted.height == 0:
        return pl.DataFrame(schema=LOOKUP_COLUMNS), 0
    async with Session(job, route) as session:  # Ctrl-C is a KeyboardInterrupt (exit 130)
        return await look_up(session, wanted)
