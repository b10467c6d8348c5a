"""What a run did, told to people (a table on stderr) and to programs (JSON on stdout)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text


def say(console: Console, message: str, *, prefix: str = "", style: str = "") -> None:
    """Print one line of plain text: brackets in paths or settings are never read as markup."""
    line = Text(prefix, style=style) + Text(message) if prefix else Text(message)
    console.print(line, highlight=False)


@dataclass(frozen=True)
class Summary:
    """The counts every run reports; ``rows = valid + duplicates + invalid``."""

    command: str
    action: str
    target: str
    tenant: str
    cloud: str
    api_version: str
    dry_run: bool
    rows: int
    valid: int
    duplicates: int
    invalid: int
    already_done: int
    failed_before: int
    to_send: int
    batches: int
    estimated_seconds: float
    confirmed: int = 0
    failed: int = 0
    unknown: int = 0
    requests: int = 0
    throttled: int = 0
    seconds: float = 0.0
    ledger: str | None = None
    rejects: str | None = None
    report: str | None = None
    stopped: str | None = None
    interrupted: bool = False

    @property
    def unsent(self) -> int:
        return self.to_send - self.confirmed - self.failed - self.unknown

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["unsent"] = self.unsent
        return data


def render_plan(summary: Summary, console: Console) -> None:
    """What a run will do: its counts, batches, and how long it takes at the configured rate."""
    _render(summary, console, sent=False, title=f"batcher {summary.command}: plan")
    say(
        console,
        f"{_where(summary)}: {summary.to_send:,} IDs in {summary.batches:,} requests, "
        f"about {format_duration(summary.estimated_seconds)} at the configured rate"
        + (" (the built-in simulator)" if summary.target == "simulator" else ""),
    )


def render_summary(summary: Summary, console: Console) -> None:
    """A short table of what the run did, and where its files are."""
    if summary.dry_run:
        render_plan(summary, console)
        say(console, "dry run: nothing was sent")
    else:
        _render(summary, console, sent=True, title=f"batcher {summary.command}")
        say(console, f"{_where(summary)}: took {format_duration(summary.seconds)}")
    if summary.ledger:
        say(console, f"ledger:  {summary.ledger}")
    if summary.rejects:
        say(console, f"rejects: {summary.rejects}")
    if summary.report:
        say(console, f"report:  {summary.report}")


def _where(summary: Summary) -> str:
    return f"{summary.action} on tenant {summary.tenant} ({summary.cloud}, {summary.api_version})"


def _render(summary: Summary, console: Console, *, sent: bool, title: str) -> None:
    table = Table(title=title)
    table.add_column("", style="bold")
    table.add_column("count", justify="right")
    rows: list[tuple[str, int]] = []
    if summary.command in ("run", "undo"):
        rows += [
            ("rows read", summary.rows),
            ("valid IDs", summary.valid),
            ("duplicates", summary.duplicates),
            ("invalid (see rejects file)", summary.invalid),
            ("already confirmed earlier", summary.already_done),
            ("failed earlier (use replay)", summary.failed_before),
        ]
    else:
        rows += [
            ("confirmed earlier", summary.already_done),
            ("not selected (other error codes)", summary.failed_before),
        ]
    rows += [("to send", summary.to_send), ("batches", summary.batches)]
    if sent:
        rows += [
            ("confirmed", summary.confirmed),
            ("failed", summary.failed),
            ("unsure (re-sent on resume)", summary.unknown),
            ("not sent yet", summary.unsent),
            ("requests", summary.requests),
            ("throttled (429)", summary.throttled),
        ]
    for label, value in rows:
        table.add_row(label, f"{value:,}")
    console.print(table)


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def excel_safe_expr(column: pl.Expr) -> pl.Expr:
    """Defuse text cells a spreadsheet would run as a formula (=, +, -, @, tab, CR first)."""
    risky = column.str.contains(r"^[=+\-@\t\r]")
    return pl.when(risky).then(pl.lit("'") + column).otherwise(column)


def write_rejects(rejects: pl.DataFrame, path: Path) -> None:
    """Every invalid row with its file, row and reason; owner-readable only, Excel-safe."""
    frame = rejects.rename({"source_row": "row"}).select(
        "source_file", "row", "raw_value", "reason"
    )
    write_report(frame, path)


REPORT_FORMATS = (".csv", ".parquet", ".json")


def write_report(frame: pl.DataFrame, path: Path) -> None:
    """Write the per-ID report as CSV (Excel-safe), Parquet or JSON; owner-readable only."""
    suffix = path.suffix.lower()
    if suffix not in REPORT_FORMATS:
        raise ValueError(f"unsupported report format {suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        if suffix == ".parquet":
            frame.write_parquet(fh)
        elif suffix == ".json":
            fh.write(json.dumps(frame.to_dicts(), indent=1).encode("utf-8"))
        else:
            frame.with_columns(
                excel_safe_expr(pl.col(name)).alias(name)
                for name, dtype in frame.schema.items()
                if dtype == pl.String
            ).write_csv(fh)
