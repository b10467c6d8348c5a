"""Named crash points for the crash tests: the process kills itself where a test asks it to.

Set ``BATCHER_FAILPOINT=NAME:N`` to SIGKILL the process the N-th time it reaches NAME (N
defaults to 1). Unset, ``hit`` costs one dictionary lookup. The points:

- ``ledger.before_begin``: before a ledger transaction starts
- ``ledger.before_commit``: inside a transaction, after its writes, before COMMIT
- ``send.after_intent``: the intent to send is committed; the request has not left
- ``send.after_answer``: Graph answered; the answer is not recorded yet
- ``comment.after_post``: the incident comment is posted; the ledger does not record it yet
- ``items.listed``: a list-then-act step's list is recorded; no item is acted on yet
"""

from __future__ import annotations

import os

from batcher.platform import kill_self

_ENV = "BATCHER_FAILPOINT"


def _parse(value: str) -> tuple[str, int]:
    name, _, count = value.partition(":")
    return name, int(count) if count.isdigit() and int(count) > 0 else 1


_target: tuple[str, int] | None = _parse(os.environ[_ENV]) if os.environ.get(_ENV) else None
_seen = 0


def hit(name: str) -> None:
    """SIGKILL this process if ``name`` is the armed point and its count is reached."""
    global _seen
    if _target is None or _target[0] != name:
        return
    _seen += 1
    if _seen >= _target[1]:
        kill_self()
