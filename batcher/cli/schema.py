"""The one --json schema of every command: an envelope, and each command's result (README)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

if TYPE_CHECKING:
    from batcher.job.status import Status

CommandName = Literal[
    "run", "replay", "undo", "verify", "resolve", "report", "status", "comment", "apply"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorInfo(_Strict):
    """Why the command exited non-zero: ``code`` names the exit code; ``message`` is the line
    the console said, without its ``error:`` prefix."""

    code: Literal[
        "some_failed", "usage", "auth", "internal", "unreachable", "interrupted", "terminated"
    ]
    message: str


class InputsResult(_Strict):
    rows: int
    valid: int
    duplicates: int
    invalid: int
    skipped: int
    looked_up: int
    resolved: int
    not_found: int
    ambiguous: int
    guests: int
    not_looked_up: int
    lookup_requests: int
    users: int
    from_ledger: int


class ActionResult(_Strict):
    name: str
    undo: str | None
    budget: str
    to_send: int
    requests: int
    already_done: int
    done_elsewhere: int
    failed_before: int
    not_selected: int
    skipped: int
    done: int
    failed: int
    unknown: int
    not_sent: int
    estimated_seconds: float  # when its sends end at the least, from the start
    guarded: int  # users the guards keep from it (protected, or held back administrators)


class GuardedResult(_Strict):
    """A protected or held-back user, and the entry or roles that decided it."""

    user_id: str
    name: str
    verdict: Literal["protected", "held_back"]
    why: str
    roles: str | None


class SendResult(_Strict):
    """run, replay and undo."""

    target: str
    tenant: str
    cloud: str
    api_version: str
    dry_run: bool
    inputs: InputsResult
    actions: dict[str, ActionResult]
    users_to_act: int
    requests: int
    throttled: int
    estimated_seconds: float
    seconds: float
    ledger: str | None
    ledger_exists: bool
    rejects: str | None
    report: str | None
    stopped: str | None
    unreachable: bool
    interrupted: bool
    notes: list[str]
    guarded: list[GuardedResult]


class VerifyResult(_Strict):
    ledger: str
    report: str
    requests: int
    actions: dict[str, dict[str, int]]
    expected: dict[str, str]
    nothing_to_verify: str | None
    interrupted: bool


class ResolveResult(_Strict):
    out: str
    inputs: InputsResult


class ReportResult(_Strict):
    out: str
    steps: int
    counts: dict[str, dict[str, int]]  # action -> state -> steps


class CommentResult(_Strict):
    incident: str
    run_id: str
    ledger: str
    posted: bool  # this command posted it
    already: str | None  # "ledger" or "incident": it was there before
    request_id: str | None


class StatusResult(_Strict):
    ledger: str
    tenant: str | None
    cloud: str | None
    api_version: str | None
    undo_of: str | None
    live: bool
    users: int
    counts: dict[str, dict[str, int]]
    lookups: dict[str, int]
    last_run: dict[str, Any] | None
    killed: bool
    resume: str | None


RESULTS: dict[str, type[_Strict]] = {
    "run": SendResult,
    "replay": SendResult,
    "undo": SendResult,
    "apply": SendResult,
    "verify": VerifyResult,
    "resolve": ResolveResult,
    "report": ReportResult,
    "status": StatusResult,
    "comment": CommentResult,
}


class Envelope(_Strict):
    """What every command prints with --json: one object, one line, on stdout. ``ok`` is
    ``exit_code == 0``; ``result`` is null when the command failed before it had one;
    ``error`` is null when ``ok``."""

    command: CommandName
    ok: bool
    exit_code: int
    result: dict[str, Any] | None
    error: ErrorInfo | None

    @model_validator(mode="after")
    def _consistent(self) -> Envelope:
        if self.ok != (self.exit_code == 0) or self.ok != (self.error is None):
            raise ValueError("ok, exit_code and error disagree")
        if self.result is not None:
            RESULTS[self.command].model_validate(self.result)
        return self


def envelope(
    command: str, exit_code: int, result: dict[str, Any] | None, error: ErrorInfo | None
) -> str:
    """The JSON line: validated against the schema before it is printed."""
    data = {
        "command": command,
        "ok": exit_code == 0,
        "exit_code": exit_code,
        "result": result,
        "error": error.model_dump() if error else None,
    }
    return Envelope.model_validate(data).model_dump_json()


def status_result(status: Status) -> dict[str, Any]:
    """What --json prints of a status (StatusResult)."""
    meta = status.meta
    return {
        "ledger": str(status.path),
        "tenant": meta.get("tenant"),
        "cloud": meta.get("cloud"),
        "api_version": meta.get("api_version"),
        "undo_of": meta.get("undo_of"),
        "live": status.live,
        "users": status.users,
        "counts": status.counts,
        "lookups": status.lookups,
        "last_run": status.last_run,
        "killed": status.killed,
        "resume": status.resume,
    }
