"""The plan file: what `batcher plan` decided, for a second person to review and `apply` to do.

JSON; its ``digest`` is the sha256 of the canonical serialisation (sorted keys, no spaces,
UTF-8) of everything else, so any edit of the content is seen. Each user record says who
they are, why they are in (``verdict``: act, protected or held_back, and ``why``), what each
action will do to them, and the facts read before (``before``).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from batcher.actions import Verdict, withheld
from batcher.errors import ConfigError
from batcher.ledger import RunScope
from batcher.plan import USER_COLUMNS, USER_PROPERTIES, Plan

FORMAT = "batcher-plan/1"
ACT = "act"  # the verdict apply acts on; "protected" and "held_back" are kept out
SEND, DONE_ELSEWHERE = "send", "done elsewhere"  # a step's fate; otherwise "skip: <reason>"
# The hook for the guards (protected accounts, administrators held back): a frame of
# (user_id, verdict, why, roles) replaces the defaults below for the users it names.
DECISION_COLUMNS = {
    "user_id": pl.String,
    "verdict": pl.String,
    "why": pl.String,
    "roles": pl.List(pl.String),
}


def canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(data: Mapping[str, Any]) -> str:
    """The sha256 of the canonical content without its ``digest`` field."""
    return hashlib.sha256(canonical({k: v for k, v in data.items() if k != "digest"})).hexdigest()


def author() -> str:
    """Who made the plan: the OS user at this host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Made:
    """What `batcher plan` hands over to be written: the scope, the plan, the users and the
    look-ups (for UPNs and the before facts), the config digest and the guards' decisions."""

    scope: RunScope
    plan: Plan
    users: pl.DataFrame  # USER_COLUMNS + USER_PROPERTIES, every user in
    lookups: pl.DataFrame  # LOOKUP_COLUMNS
    config_digest: str
    decisions: pl.DataFrame | None = None  # DECISION_COLUMNS; None: every user "act"
    include_admins: bool = False  # --include-admins: administrators were not held back


def build(made: Made, now: datetime) -> dict[str, Any]:
    """The plan file's content, with its digest."""
    upns: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for row in made.lookups.drop_nulls("user_id").iter_rows(named=True):
        upns.setdefault(row["user_id"], row["user_principal_name"])
        kinds.setdefault(row["user_id"], row["kind"])
    decided = {}
    if made.decisions is not None:
        decided = {row["user_id"]: row for row in made.decisions.iter_rows(named=True)}
    fates = _fates(made.plan)
    users = []
    for row in made.users.iter_rows(named=True):
        uid = row["user_id"]
        decision = decided.get(uid, {})
        users.append(
            {
                "user_id": uid,
                "upn": upns.get(uid),
                "input_value": row["input_value"],
                "kind": kinds.get(uid, row["matched_by"]),
                "source_file": row["source_file"],
                "source_row": row["source_row"],
                "matched_by": row["matched_by"],
                "user_type": row["user_type"],
                "properties": {p: row.get(p) for p in USER_PROPERTIES},
                "verdict": decision.get("verdict") or ACT,
                "why": decision.get("why") or _why(row),
                "roles": list(decision.get("roles") or []),
                # what the look-up read before: more facts (the guards') go beside it
                "before": {"account_enabled": row["account_enabled"]},
                "steps": {name: fates[name].get(uid, SEND) for name in made.scope.actions},
            }
        )
    content: dict[str, Any] = {
        "format": FORMAT,
        "tenant": made.scope.tenant,
        "cloud": made.scope.cloud,
        "api_version": made.scope.api_version,
        "actions": list(made.scope.actions),
        "include_admins": made.include_admins,
        "users": users,
        "config_digest": made.config_digest,
        "author": author(),
        "created_at": now.astimezone(UTC).isoformat(timespec="seconds"),
    }
    content["digest"] = digest_of(content)
    return content


def _why(row: Mapping[str, Any]) -> str:
    where = f"{row['source_file']} row {row['source_row']}" if row["source_file"] else "input"
    return f"{where}: {row['input_value']} ({row['matched_by']})"


def _fates(plan: Plan) -> dict[str, dict[str, str]]:
    """Per action, the users not sent to: guarded (protected, held_back), skipped (why) or
    done by another recent run."""
    fates: dict[str, dict[str, str]] = {}
    verdicts = plan.guarded if plan.guarded is not None else pl.DataFrame()
    kept = [] if not verdicts.height else verdicts.filter(pl.col("verdict") != ACT).rows()
    for item in plan.actions:
        fate: dict[str, str] = {}
        for uid, verdict, *_ in kept:
            if withheld(item.action, verdict):
                fate[uid] = verdict
        for skipped in item.skipped_by:
            fate.update(dict.fromkeys(skipped.user_ids.to_list(), f"skip: {skipped.reason}"))
        sending = set(item.to_send.to_list()) | set(fate)
        for uid in plan.new_users.get_column("user_id").to_list():
            if uid not in sending:
                fate[uid] = DONE_ELSEWHERE
        fates[item.action.name] = fate
    return fates


def write(content: Mapping[str, Any], path: Path) -> None:
    """Write the plan (readable: indented, keys sorted) at ``path``, replacing it whole."""
    text = json.dumps(content, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


@dataclass(frozen=True)
class Loaded:
    """A plan file read back, its digest checked."""

    path: Path
    content: dict[str, Any]

    @property
    def digest(self) -> str:
        return str(self.content["digest"])

    @property
    def tenant(self) -> str:
        return str(self.content["tenant"])

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(str(a) for a in self.content["actions"])

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(str(self.content["created_at"]))

    def age(self, now: datetime) -> timedelta:
        return now - self.created_at

    def records(self, verdict: str | None = None) -> list[dict[str, Any]]:
        users: list[dict[str, Any]] = self.content["users"]
        return [u for u in users if verdict is None or u["verdict"] == verdict]

    @property
    def include_admins(self) -> bool:
        return bool(self.content.get("include_admins", False))

    def acted_on(self) -> list[dict[str, Any]]:
        """The records of users with a step to send: all but the protected (one held back
        gets the actions that do not touch access)."""
        return [u for u in self.records() if u["verdict"] != Verdict.PROTECTED]

    def users(self) -> pl.DataFrame:
        """The users to act on (all but the protected), as the plan's users (USER_COLUMNS and
        USER_PROPERTIES), in the plan's order."""
        rows = [
            {
                **{c: u.get(c) for c in USER_COLUMNS if c != "account_enabled"},
                "account_enabled": u["before"].get("account_enabled"),
                **{p: u["properties"].get(p) for p in USER_PROPERTIES},
            }
            for u in self.acted_on()
        ]
        return pl.DataFrame(rows, schema={**USER_COLUMNS, **USER_PROPERTIES}, orient="row")

    def done_elsewhere(self) -> pl.DataFrame:
        """(user_id, action) another recent run had done when the plan was made: not sent."""
        rows = [
            (u["user_id"], action)
            for u in self.acted_on()
            for action, fate in u["steps"].items()
            if fate == DONE_ELSEWHERE
        ]
        return pl.DataFrame(rows, schema={"user_id": pl.String, "action": pl.String}, orient="row")

    def lookups(self) -> pl.DataFrame:
        """The look-up outcomes the plan holds (for the ledger: UPNs in its report)."""
        rows = [
            {
                "input_value": u["input_value"],
                "kind": u["kind"],
                "user_id": u["user_id"],
                "user_principal_name": u["upn"],
                "matched_by": u["matched_by"],
                "outcome": "guest" if u["user_type"] == "Guest" else "resolved",
                "reason": None,
                "source_file": u["source_file"],
                "source_row": u["source_row"],
                "user_type": u["user_type"],
                "account_enabled": u["before"].get("account_enabled"),
                **{p: u["properties"].get(p) for p in USER_PROPERTIES},
            }
            for u in self.records()
            if u["upn"] is not None
        ]
        from batcher.ledger import LOOKUP_COLUMNS

        return pl.DataFrame(rows, schema=LOOKUP_COLUMNS, orient="row")


def load(path: Path) -> Loaded:
    """Read a plan file; refuse (one line, what to do) one that is not a plan or was edited."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such plan file; make one with `batcher plan`") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path}: not a plan file ({exc}); make one with `batcher plan`"
        ) from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a {FORMAT} plan file; make one with `batcher plan`")
    if content.get("digest") != digest_of(content):
        raise ConfigError(
            f"{path}: the plan was changed after it was made (its digest does not match its "
            "content); nothing was sent; make a new plan with `batcher plan` and have it reviewed"
        )
    return Loaded(path, content)
