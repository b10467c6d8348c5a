"""`batcher report LEDGER --out report.html`: the evidence page's data, gathered from the
ledger, its undo ledger and its verify report; report/html.py renders it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from batcher.actions import ACTIONS
from batcher.job.comment import COMMENTED, RUN_ID, action_counts
from batcher.job.ledgers import undo_ledger
from batcher.ledger import Ledger
from batcher.ledger.reads import Reads
from batcher.report.chart import timeline_frame
from batcher.report.files import read_report, sibling, step_report
from batcher.report.html import EvidencePage, FollowUp

_META_SHOWN = ("tenant", "cloud", "api_version", "actions")


def evidence_page(ledger: Path) -> EvidencePage:
    """Everything the page shows of ``ledger`` and of the undo and verify that followed it."""
    book = Ledger.open_existing(ledger)
    try:
        meta = book.meta()
        facts = {k: meta[k] for k in _META_SHOWN if k in meta}
        facts.update({k: v for k, v in meta.items() if k.startswith("window")})
        if RUN_ID in meta:
            facts["run ID (the incident comment carries it)"] = meta[RUN_ID]
        for key, value in meta.items():
            if key.startswith(COMMENTED):
                facts[f"commented on incident {key[len(COMMENTED) :]}"] = value
        users = step_report(book.report()).join(
            book.before_images(), on="user_id", how="left", maintain_order="left"
        )
        page = EvidencePage(
            ledger=ledger.name,
            generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            facts=facts,
            runs=book.runs(),
            counts=action_counts(book),
            timeline=_timeline(book),
            users=users,
            followups=[*_undo(ledger), *_verify(ledger)],
        )
    finally:
        book.close()
    return page


def _timeline(book: Reads) -> pl.DataFrame:
    budgets = {name: str(action.budget) for name, action in ACTIONS.items()}
    return timeline_frame(book.attempt_times(), budgets)


def _undo(ledger: Path) -> list[FollowUp]:
    path = undo_ledger(ledger)
    if not path.is_file():
        return []
    undo = Ledger.open_existing(path)
    try:
        runs = undo.runs()
        when = str(runs[-1]["started_at"]) if runs else None
        return [FollowUp("undo", str(path), when, action_counts(undo))]
    finally:
        undo.close()


def _verify(ledger: Path) -> list[FollowUp]:
    path = sibling(ledger, ".verify.csv")
    if not path.is_file():
        return []
    frame = read_report(path)
    counts: dict[str, dict[str, int]] = {}
    for action, status, n in frame.group_by("action", "verify_status").len().sort("action").rows():
        counts.setdefault(str(action), {})[str(status)] = int(n)
    when = frame.get_column("checked_at").max() if frame.height else None
    return [FollowUp("verify", str(path), None if when is None else str(when), counts)]
