"""`batcher run`'s guards: read who is protected and who holds a privileged role, decide each
user's verdict once (batcher.safety), and say it in the gate, the summary and --json."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import polars as pl

from batcher.actions import Action, Verdict, withheld
from batcher.auth import operator_of
from batcher.config import protected_kind
from batcher.job.execute import Facts
from batcher.job.session import Session
from batcher.job.summary import GuardedUser
from batcher.plan import Plan, guard
from batcher.safety import decide, guarded, none
from batcher.workers.guards import Found, GuardReader

SHOWN = 20  # users named in the gate, per verdict; then a count


@dataclass(frozen=True)
class Guarding:
    """Every user's verdict (VERDICT_COLUMNS), and what reading them took and found."""

    verdicts: pl.DataFrame
    requests: int = 0
    unknown: tuple[str, ...] = ()  # protected UPNs that name nobody
    roles_read: bool = False


async def read_guards(
    session: Session, users: pl.DataFrame, actions: tuple[Action, ...], include_admins: bool
) -> Guarding:
    """Read the protected accounts (when [safety] names any) and the privileged role holders
    (when an action touches access, unless ``include_admins``), then decide. A refused read
    stops the run here, before any write (AuthError, naming the permission)."""
    job = session.job
    entries = job.settings.safety.protected
    roles = any(a.touches_access for a in actions) and not include_admins
    if not users.height:
        return Guarding(none())
    client = await session.client()
    assert job.tokens is not None
    operator = operator_of(await job.tokens.token())
    control = session.control()
    reader = GuardReader(client, session.caller(control))
    with job.stop.attached(control), control.scope():
        if entries:
            await reader.protected(entries)
        if roles:
            await reader.role_holders()
    found: Found = reader.found
    verdicts = decide(
        users.get_column("user_id"),
        found.protected,
        found.roles,
        operator,
        include_admins=include_admins,
    )
    return Guarding(verdicts, found.requests, tuple(found.unknown), roles)


def offline_guards(protected: list[str], users: pl.DataFrame) -> Guarding:
    """A dry run's verdicts, without a request: only object IDs in [safety] protected."""
    ids = {e.lower(): e for e in protected if protected_kind(e) == "id"}
    return Guarding(decide(users.get_column("user_id"), ids, {}))


def with_guards(
    facts: Facts,
    plan: Plan,
    guarding: Guarding,
    names: dict[str, str],
    dry_run: bool = False,
) -> Facts:
    """The gate's lines and the summary's list: who is protected, who is held back (by name,
    up to SHOWN, then a count), with the entry or the roles."""
    rows = guarded(guarding.verdicts)
    users = tuple(
        GuardedUser(uid, names.get(uid, uid), verdict, why or "", roles)
        for uid, verdict, why, roles in rows.select(
            "user_id", "verdict", "why", "roles"
        ).iter_rows()
    )
    notes: list[str] = []
    protected = [u for u in users if u.verdict == Verdict.PROTECTED]
    held = [u for u in users if u.verdict == Verdict.HELD_BACK]
    if protected:
        notes.append(
            f"{_count(len(protected))} protected: no write of any action is sent to them: "
            + _named(protected, lambda u: u.why)
        )
    if held:
        kept = ", ".join(
            p.action.name for p in plan.actions if withheld(p.action, Verdict.HELD_BACK)
        )
        notes.append(
            f"{_count(len(held))} with a privileged directory role held back from "
            f"{kept or 'directory actions'} (--include-admins acts on them too): "
            + _named(held, lambda u: u.roles or "")
        )
    for upn in guarding.unknown:
        notes.append(f"[safety] protected {upn!r} names no user in the directory; check it")
    if guarding.requests:
        notes.append(
            f"the guards read protected accounts and privileged roles in "
            f"{guarding.requests:,} request{'s' * (guarding.requests != 1)}"
        )
    if dry_run:
        notes.append(
            "protected UPNs and groups, the signed-in operator and administrators are read "
            "when the run starts, before it asks you to go on"
        )
    return replace(facts, notes=(*facts.notes, *notes), guarded=users)


async def guard_plan(
    session: Session, plan: Plan, facts: Facts, lookups: pl.DataFrame, include_admins: bool
) -> tuple[Plan, Facts]:
    """``plan`` (a replay's, an undo's, an apply's) less what the guards withhold now, read
    for the users it sends to: a protected user gets no write; one held back, no action that
    touches access unless ``include_admins``. ``lookups``: the UPNs the gate names them by."""
    sending = [p.to_send for p in plan.actions if p.to_send.len()]
    if not sending:
        return plan, facts
    ids = pl.concat(sending).unique(maintain_order=True)
    actions = tuple(p.action for p in plan.actions if p.to_send.len())
    guarding = await read_guards(session, ids.to_frame("user_id"), actions, include_admins)
    plan = guard(plan, guarding.verdicts)
    names = {}
    if lookups.height:
        read = lookups.drop_nulls(["user_id", "user_principal_name"])
        names = {str(u): str(n) for u, n in read.select("user_id", "user_principal_name").rows()}
    return plan, with_guards(facts, plan, guarding, names)


def _count(n: int) -> str:
    return f"{n:,} user{'s' * (n != 1)}"


def _named(users: list[GuardedUser], why: Callable[[GuardedUser], str]) -> str:
    shown = "; ".join(f"{u.name} ({why(u)})" for u in users[:SHOWN])
    more = len(users) - SHOWN
    return shown + (f"; and {more:,} more (see --json or the report)" if more > 0 else "")


def names_of(users: pl.DataFrame, lookups: pl.DataFrame) -> dict[str, str]:
    """user_id -> the UPN the look-up read, else the value the input gave."""
    names = dict(users.select("user_id", "input_value").iter_rows())
    if lookups.height and "user_principal_name" in lookups.columns:
        read = lookups.drop_nulls(["user_id", "user_principal_name"])
        names.update(read.select("user_id", "user_principal_name").iter_rows())
    return {k: str(v) for k, v in names.items() if v is not None}
