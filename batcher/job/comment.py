"""`run --comment` and `batcher comment`: one comment on the incident with the run's counts,
posted once. The comment carries the ledger's run ID; before posting, the incident's comments
are read, so a kill between the POST and the ledger's record of it posts nothing twice."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio

from batcher import failpoints
from batcher.errors import ConfigError, GraphError
from batcher.job.ledgers import check_origin
from batcher.job.session import Route, Session
from batcher.job.setup import Job
from batcher.ledger import Ledger, StepState
from batcher.ledger.reads import Reads

RUN_ID = "run_id"  # meta: the ledger's run ID, the same across resumes; the comment says it
COMMENTED = "comment_on_incident:"  # meta key prefix, + incident ID: how it was settled
COUNTED = ("done", "failed", "unknown", "skipped", "protected", "held back")
NEEDS = "SecurityIncident.ReadWrite.All"
_INCIDENT = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass(frozen=True)
class Commented:
    """What became of the comment: ``posted`` now, or ``already`` there (``"ledger"``: the
    ledger records it; ``"incident"``: found among the incident's comments)."""

    incident: str
    run_id: str
    ledger: str
    text: str
    posted: bool
    already: str | None = None
    request_id: str | None = None

    def result(self) -> dict[str, object]:
        return {
            "incident": self.incident,
            "run_id": self.run_id,
            "ledger": self.ledger,
            "posted": self.posted,
            "already": self.already,
            "request_id": self.request_id,
        }


class CommentFailed(Exception):
    """Graph refused the comment or did not answer: ``str()`` says what to do."""


def check_incident(incident: str) -> str:
    """Refuse an incident ID that cannot be one (it goes into a URL path)."""
    if not _INCIDENT.match(incident):
        raise ConfigError(
            f"--incident {incident!r}: not an incident ID; give the Defender XDR incident's ID "
            "as the portal shows it (e.g. 2972395)"
        )
    return incident


def action_counts(reader: Reads) -> dict[str, dict[str, int]]:
    """Per action, the counts the comment and the HTML report give (COUNTED)."""
    guarded = guard_counts(reader)
    every = reader.counts()
    return {
        action: {
            "done": per[StepState.DONE],
            "failed": per[StepState.FAILED],
            "unknown": per[StepState.UNKNOWN],
            "skipped": per[StepState.SKIPPED],
            "protected": guarded.get(action, {}).get("protected", 0),
            "held back": guarded.get(action, {}).get("held back", 0),
        }
        for action, per in every.items()
    }


def guard_counts(reader: Reads) -> dict[str, dict[str, int]]:
    """HOOK for the guards (issue 16): per action, the steps refused as protected and those
    held back. This ledger records neither yet, so none: the counts read 0."""
    return {}


def comment_text(reader: Reads, run_id: str) -> str:
    """The comment: the run ID first (what a rerun looks for), the ledger, then per action."""
    meta = reader.meta()
    lines = [
        f"batcher run {run_id}",
        f"ledger: {reader.path.name}; tenant: {meta.get('tenant', '?')}",
    ]
    for action, counts in action_counts(reader).items():
        said = ", ".join(f"{name} {n:,}" for name, n in counts.items())
        lines.append(f"{action}: {said}")
    return "\n".join(lines)


def comment(job: Job, ledger: Path, incident: str, route: Route | None = None) -> Commented:
    """Post the comment on ``incident`` unless the ledger or the incident already has it."""
    check_incident(incident)
    book = Ledger.open(ledger)  # the writer lock: refused while a run still writes it
    try:
        check_origin(ledger, book.meta(), job.scope, "comment")
        meta = book.meta()
        run_id = meta.get(RUN_ID)
        if run_id is None:
            run_id = uuid.uuid4().hex[:12]
            book.set_meta(RUN_ID, run_id)  # before the POST: a rerun looks for this one
        text = comment_text(book, run_id)
        done = Commented(incident, run_id, str(ledger), text, posted=False)
        if meta.get(COMMENTED + incident):
            return _settled(done, "ledger")
        found, request_id = anyio.run(_post, job, route, incident, text, run_id)
        failpoints.hit("comment.after_post")
        book.set_meta(COMMENTED + incident, request_id or "found on the incident")
        if found:
            return _settled(done, "incident")
        return Commented(incident, run_id, str(ledger), text, True, None, request_id)
    finally:
        book.close()


def _settled(done: Commented, where: str) -> Commented:
    return Commented(done.incident, done.run_id, done.ledger, done.text, False, where)


async def _post(
    job: Job, route: Route | None, incident: str, text: str, run_id: str
) -> tuple[bool, str | None]:
    """(found, request-id): whether the incident has it already, else the POST's request-id."""
    async with Session(job, route) as session:
        client = await session.client()
        try:
            said = await client.incident_comments(incident, str(uuid.uuid4()))
            if any(f"batcher run {run_id}" in c for c in said):
                return True, None
            return False, await client.comment_incident(incident, text, str(uuid.uuid4()))
        except GraphError as exc:
            raise CommentFailed(_failed(exc, incident)) from None


def _failed(exc: GraphError, incident: str) -> str:
    why = f"{exc.status} {exc.code}" if exc.status else "no answer"
    if exc.status == 404:
        what = f"Graph has no incident {incident}; check the ID in the Defender portal"
    elif exc.status in (401, 403):
        what = f"the app needs {NEEDS} (application) to comment on incidents"
    else:
        what = "Graph did not take it; try again later"
    ids = f" (request-id {exc.request_id})" if exc.request_id else ""
    return f"incident {incident}: the comment was not posted: {why}{ids}; {what}"
