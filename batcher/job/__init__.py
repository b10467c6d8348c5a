"""Commands as short functions over a Job: run, replay, undo, verify, resolve, status.

Each builds a Plan directly and returns data; the CLI renders it. The library never prints.
"""

from batcher.job.execute import config_digest
from batcher.job.ledgers import default_path, recorded_actions, undo_ledger
from batcher.job.replay import ReplayOptions, replay
from batcher.job.resolve import Resolved, ResolveOptions, resolve
from batcher.job.run import RunOptions, run
from batcher.job.setup import Job, run_scope, tenant, tokens_for
from batcher.job.sources import SourceOptions
from batcher.job.status import Status, status
from batcher.job.summary import ActionSummary, Inputs, Summary, VerifySummary
from batcher.job.undo import undo, undo_actions
from batcher.job.verify import VerifyOptions, verify

__all__ = [
    "ActionSummary",
    "Inputs",
    "Job",
    "ReplayOptions",
    "ResolveOptions",
    "Resolved",
    "RunOptions",
    "SourceOptions",
    "Status",
    "Summary",
    "VerifyOptions",
    "VerifySummary",
    "config_digest",
    "default_path",
    "recorded_actions",
    "replay",
    "resolve",
    "run",
    "run_scope",
    "status",
    "tenant",
    "tokens_for",
    "undo",
    "undo_actions",
    "undo_ledger",
    "verify",
]
