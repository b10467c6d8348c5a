"""Report files: the per-step report, the rejects, verify's results; CSV is safe for Excel."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import polars as pl

from batcher.actions import ACTIONS
from batcher.errors import ConfigError, OutputError
from batcher.ledger.states import StepState
from batcher.platform import PATIENCE, HeldOpen, Patience, write_private

REPORT_FORMATS = (".csv", ".parquet", ".json")
PAGE_FORMAT = ".html"  # `batcher report` only: the evidence page (report/html.py)
REJECT_COLUMNS = {
    "source_file": pl.String,
    "row": pl.Int64,
    "raw_value": pl.String,
    "reason": pl.String,
}


def check_report_path(path: Path, formats: tuple[str, ...] = REPORT_FORMATS) -> Path:
    """Refuse a report name no format matches, before any work is done for it."""
    if path.suffix.lower() not in formats:
        raise ConfigError(
            f"--out {path}: unknown report format {path.suffix or '(none)'!r}; "
            f"end the name with {', '.join(formats)}"
        )
    return path


def check_out_folder(path: Path) -> Path:
    """Refuse an --out whose folder does not exist, as cp does, rather than make it up."""
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(
            f"--out {path}: the folder {folder} does not exist; create it first, or write the "
            "report somewhere that exists"
        )
    return path


def excel_safe_expr(column: pl.Expr) -> pl.Expr:
    """Defuse text cells a spreadsheet would run as a formula (=, +, -, @, tab, CR first)."""
    risky = column.str.contains(r"^[=+\-@\t\r]")
    return pl.when(risky).then(pl.lit("'") + column).otherwise(column)


def step_report(
    frame: pl.DataFrame,
    guarded: pl.DataFrame | None = None,
    items: Sequence[Mapping[str, Any]] = (),
) -> pl.DataFrame:
    """The ledger's per-step report with a ``note`` on every row of a user whom a refused step
    leaves as they were (a disable refused: the account stays enabled, even where their
    sessions were revoked); with ``items`` (the ledger's item_rows), an ``items`` column on
    each list-then-act step: every item listed, what became of it (removed, kept and why) and
    its before-image, as JSON; then a row per ``guarded`` user (user_id, verdict, why, roles):
    no action, the verdict as its state (protected, held_back), and why in its note."""
    frame = _with_items(frame, items) if items else frame
    if guarded is not None and guarded.height:
        return pl.concat(
            [step_report(frame), _guarded_rows(guarded)], how="diagonal_relaxed"
        ).select(*frame.columns, "note")
    said = {name: a.refused for name, a in ACTIONS.items() if a.refused}
    refused = (
        frame.filter(pl.col("state") == StepState.FAILED.value, pl.col("action").is_in(list(said)))
        .select("user_id", note=pl.col("action").replace_strict(said, return_dtype=pl.String))
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("note").str.join("; "))
    )
    return frame.join(refused, on="user_id", how="left", maintain_order="left")


def _with_items(frame: pl.DataFrame, items: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    per_step: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in items:
        shown = {"state": row["state"], "reason": row["reason"], **json.loads(row["before"])}
        if row["error_code"]:
            shown["error"] = f"{row['last_status']} {row['error_code']}"
        per_step.setdefault((row["user_id"], row["action"]), []).append(shown)
    column = pl.DataFrame(
        [(u, a, json.dumps(v, sort_keys=True)) for (u, a), v in per_step.items()],
        schema={"user_id": pl.String, "action": pl.String, "items": pl.String},
        orient="row",
    )
    return frame.join(column, on=["user_id", "action"], how="left", maintain_order="left")


def write_rejects(rejects: pl.DataFrame, path: Path) -> None:
    """Every invalid row or unusable identity with its file, row and reason."""
    frame = rejects.rename({"source_row": "row"}).select(list(REJECT_COLUMNS))
    write_report(frame, path)


def write_report(frame: pl.DataFrame | str, path: Path, patience: Patience = PATIENCE) -> None:
    """Write a report as CSV (Excel-safe), Parquet or JSON, or (``frame`` a page's text) HTML,
    atomically, owner-readable only. A report another program holds open is waited for
    briefly (``patience``), then refused."""
    suffix = path.suffix.lower()
    if suffix not in ((PAGE_FORMAT,) if isinstance(frame, str) else REPORT_FORMATS):
        raise ValueError(f"unsupported report format {suffix!r}")

    def write(fh: IO[bytes]) -> None:
        if isinstance(frame, str):
            fh.write(frame.encode("utf-8"))
        elif suffix == ".parquet":
            frame.write_parquet(fh)
        elif suffix == ".json":
            fh.write(json.dumps(frame.to_dicts(), indent=1, default=str).encode("utf-8"))
        else:
            frame.with_columns(
                excel_safe_expr(pl.col(name)).alias(name)
                for name, dtype in frame.schema.items()
                if dtype == pl.String
            ).write_csv(fh)

    try:
        write_private(path, write, patience)
    except HeldOpen as exc:
        raise OutputError(
            f"{path}: cannot replace this file ({exc.strerror}); if another program has it "
            "open (Excel, say), close it there and run the command again, or choose another "
            "file name"
        ) from None


def read_report(path: Path) -> pl.DataFrame:
    """A report this module wrote, in any of its formats, every column as text (a CSV's
    defused cells keep their leading quote)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pl.read_parquet(path)
    elif suffix == ".json":
        frame = pl.DataFrame(json.loads(path.read_text(encoding="utf-8")))
    else:
        return pl.read_csv(path, infer_schema=False)
    return frame.cast(pl.String)


def sibling(ledger: Path, suffix: str) -> Path:
    """A file beside the ledger: ledger.sqlite -> ledger.report.csv and so on."""
    return ledger.with_name(ledger.stem + suffix)


def _guarded_rows(guarded: pl.DataFrame) -> pl.DataFrame:
    why = pl.col("why")
    roles = pl.when(pl.col("roles").is_not_null() & (pl.col("roles") != why))
    return guarded.select(
        "user_id",
        pl.lit(None, pl.String).alias("action"),
        pl.col("verdict").alias("state"),
        note=pl.col("verdict")
        + ": "
        + why
        + roles.then(pl.lit(" (roles: ") + pl.col("roles") + pl.lit(")")).otherwise(pl.lit("")),
    )
