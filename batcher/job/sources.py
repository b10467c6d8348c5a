"""run's sources beside files: checked before any request, read once (or from the ledger's
snapshot on a resume), and merged with the files' users as one more input."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from batcher.errors import ConfigError
from batcher.inputs import FileSummary, InputSet, no_identities
from batcher.inputs.values import KIND_GUID
from batcher.job.session import Session
from batcher.ledger import Ledger
from batcher.window import SIGN_IN_LOGS_KEPT, Window, parse_since
from batcher.workers.sources import (
    Found,
    SourceReader,
    address_clauses,
    evidence_kinds,
    no_rows,
    risk_levels,
)


@dataclass(frozen=True)
class SourceOptions:
    """--incident, --evidence, --risky, --signed-in-from, --refresh as typed."""

    incident: str | None = None
    evidence: str | None = None
    risky: str | None = None
    signed_in_from: str | None = None
    refresh: bool = False

    def given(self) -> bool:
        return any((self.incident, self.risky, self.signed_in_from))

    def names(self) -> tuple[str, ...]:
        """A stable label per source given (the default ledger's name depends on them)."""
        return tuple(
            name
            for name in (
                f"incident {self.incident}" if self.incident else "",
                f"risky {self.risky}" if self.risky else "",
                f"signed-in-from {self.signed_in_from}" if self.signed_in_from else "",
            )
            if name
        )


@dataclass(frozen=True)
class Plan:
    """The sources checked: what to read, and the lines the gate shows of them."""

    options: SourceOptions
    evidence: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    clauses: tuple[str, ...] = ()
    since: Window | None = None
    notes: list[str] = field(default_factory=list)


def check_sources(options: SourceOptions, since: str | None, now: datetime) -> Plan:
    """Every source's options refused in one line before any request is made."""
    if options.evidence is not None and not options.incident:
        raise ConfigError("--evidence chooses an incident's evidence kinds; add --incident ID")
    if options.incident is not None and not options.incident.strip().isdigit():
        raise ConfigError(
            f"--incident {options.incident}: a Defender XDR incident ID is a number (e.g. 42)"
        )
    window = None
    if options.signed_in_from:
        if since is None:
            raise ConfigError(
                "--signed-in-from needs --since (e.g. --since 7d): the sign-ins to read, up to "
                "the 30 days the logs keep"
            )
        window = parse_since(since, now, keep=SIGN_IN_LOGS_KEPT)
    return Plan(
        options,
        evidence_kinds(options.evidence) if options.incident else (),
        risk_levels(options.risky) if options.risky else (),
        address_clauses(options.signed_in_from) if options.signed_in_from else (),
        window,
    )


async def read_sources(
    session: Session, ledger: Ledger, plan: Plan
) -> tuple[pl.DataFrame, list[str]]:
    """Each source's rows: from the ledger's snapshot when it has one (a resume acts on the
    same users), else (or with --refresh) read from Graph and kept; and the gate's lines."""
    options = plan.options
    kept = ledger.sources_read()
    snapshot = ledger.source_rows()
    frames, notes, read = [], [], []
    control = session.control()
    reader = SourceReader(await session.client(), session.caller(control), control)
    for name in options.names():
        if name in kept and not options.refresh:
            rows = snapshot.filter(pl.col("source") == name)
            frames.append(rows)
            notes.append(
                f"{name}: {_users(rows.height)} from the ledger's snapshot of {kept[name]} (not "
                "read again, so this run acts on the same users; --refresh reads it again)"
            )
            continue
        found = await _read_one(reader, plan, name)
        rows = found.frame()
        if name in kept:
            notes.append(_changes(name, snapshot.filter(pl.col("source") == name), rows))
        frames.append(rows)
        notes += found.notes
        read.append((name, rows))
    if read:
        ledger.keep_sources(
            pl.concat([rows for _, rows in read]) if read else no_rows(), [n for n, _ in read]
        )
    return (pl.concat(frames) if frames else no_rows()), notes


async def _read_one(reader: SourceReader, plan: Plan, name: str) -> Found:
    options = plan.options
    if name.startswith("incident ") and options.incident:
        return await reader.incident(options.incident.strip(), plan.evidence)
    if name.startswith("risky ") and options.risky:
        return await reader.risky(plan.levels)
    assert plan.since is not None and options.signed_in_from
    return await reader.sign_ins(options.signed_in_from, plan.clauses, plan.since.start)


def _changes(name: str, before: pl.DataFrame, after: pl.DataFrame) -> str:
    old = set(before.get_column("input_value").to_list())
    new = set(after.get_column("input_value").to_list())
    added, removed = sorted(new - old), sorted(old - new)
    shown = [
        f"{len(added):,} added"
        + (f" ({', '.join(added[:5])}{', ...' * (len(added) > 5)})" if added else ""),
        f"{len(removed):,} removed"
        + (f" ({', '.join(removed[:5])}{', ...' * (len(removed) > 5)})" if removed else ""),
    ]
    return f"--refresh: {name} read again: {'; '.join(shown)} since the snapshot"


def _users(n: int) -> str:
    return f"{n:,} user{'s' * (n != 1)}"


def merged(read: InputSet, rows: pl.DataFrame) -> InputSet:
    """``read`` with each source as one more input after the files: an object ID into ids, a
    UPN or SID into identities; a value already seen (in a file or an earlier source) is a
    duplicate. Each source is counted as a file is."""
    ids, identities = read.ids, read.identities
    files = list(read.files)
    for name in rows.get_column("source").unique(maintain_order=True).to_list():
        part = rows.filter(pl.col("source") == name)
        seen = set(ids.get_column("user_id").to_list()) | set(
            identities.get_column("input_value").to_list()
        )
        fresh = part.filter(~pl.col("input_value").is_in(list(seen))).unique(
            "input_value", keep="first", maintain_order=True
        )
        guid = fresh.filter(pl.col("kind") == KIND_GUID)
        other = fresh.filter(pl.col("kind") != KIND_GUID)
        ids = pl.concat(
            [ids, guid.select(pl.col("input_value").alias("user_id"), "source_file", "source_row")]
        )
        identities = pl.concat(
            [identities, other.select(*no_identities().columns)], how="vertical_relaxed"
        )
        files.append(
            FileSummary(
                Path(name),
                part.height,
                "",
                "read from Graph",
                fresh.height,
                part.height - fresh.height,
                0,
                format="Graph",
            )
        )
    return replace(read, ids=ids, identities=identities, files=tuple(files))


def no_files() -> InputSet:
    """The inputs of a run given only sources."""
    return InputSet(
        ids=pl.DataFrame(
            schema={"user_id": pl.String, "source_file": pl.String, "source_row": pl.Int64}
        ),
        rejects=pl.DataFrame(
            schema={
                "source_file": pl.String,
                "source_row": pl.Int64,
                "raw_value": pl.String,
                "reason": pl.String,
            }
        ),
        files=(),
    )


def now() -> datetime:
    return datetime.now(UTC)
