"""Decide what still needs doing: for each action, the users minus what the ledger settled."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import polars as pl

from batcher.actions import Action, Budget, Shape, Verdict, comes_after, withheld
from batcher.graph import MAX_BATCH
from batcher.ledger import TO_SEND, StepState
from batcher.pacer import BudgetSpec

USER_COLUMNS = {
    "user_id": pl.String,
    "source_file": pl.String,
    "source_row": pl.Int64,
    "input_value": pl.String,
    "matched_by": pl.String,
    "user_type": pl.String,
    "account_enabled": pl.Boolean,
}
# what look-ups also read of each user, for an action's ``skips`` (absent: not known, no skip)
USER_PROPERTIES = {"on_premises_sync": pl.Boolean}
_TO_SEND = [s.value for s in TO_SEND]
_GUEST = pl.col("user_type").fill_null("") == "Guest"


def _rules(action: Action) -> list[tuple[str, pl.Expr]]:
    """Why ``action`` does not apply to some users, and which: guests, for an action that
    skips them, and each of its ``skips`` (a property the look-up read)."""
    rules = [(action.skips_guests, _GUEST)] if action.skips_guests else []
    return rules + [(s.reason, pl.col(s.column).eq_missing(s.equals)) for s in action.skips]


def _skips(action: Action) -> pl.Expr:
    """The users ``action`` does not apply to."""
    return pl.any_horizontal(pl.lit(False), *(rule for _, rule in _rules(action)))


def with_properties(users: pl.DataFrame) -> pl.DataFrame:
    """``users`` with every USER_PROPERTIES column (null where the look-up did not read it)."""
    missing = [pl.lit(None, t).alias(c) for c, t in USER_PROPERTIES.items() if c not in users]
    return users.with_columns(missing) if missing else users


def skipped_by(action: Action, users: pl.DataFrame, skipped: pl.Series) -> tuple[Skipped, ...]:
    """The ``skipped`` users (user_id) of ``action``, grouped by the reason each is skipped
    (the first rule that applies), for the ledger to record."""
    if not skipped.len():
        return ()
    frame = with_properties(users).filter(pl.col("user_id").is_in(skipped.implode()))
    out: list[Skipped] = []
    for reason, rule in _rules(action):
        hit = frame.filter(rule)
        frame = frame.filter(~rule)
        if hit.height:
            out.append(Skipped(reason, hit.get_column("user_id")))
    return tuple(out)


@dataclass(frozen=True)
class Skipped:
    """Users an action does not apply to, and why (recorded on each one's step)."""

    reason: str
    user_ids: pl.Series


def direct_users(ids: pl.DataFrame) -> pl.DataFrame:
    """Object IDs (user_id, source_file, source_row) as users (USER_COLUMNS), without a
    look-up: their type and whether they are enabled are not known."""
    return ids.select(
        "user_id",
        "source_file",
        "source_row",
        pl.col("user_id").alias("input_value"),
        pl.lit("object_id").alias("matched_by"),
        pl.lit(None, pl.String).alias("user_type"),
        pl.lit(None, pl.Boolean).alias("account_enabled"),
    )


@dataclass(frozen=True)
class ActionPlan:
    """One action's users to send, in input order, and what the ledgers already know."""

    action: Action
    to_send: pl.Series  # user_id
    skipped: pl.Series  # user_id: the action does not apply (guests, for some actions)
    already_done: int  # done in this ledger
    done_elsewhere: int  # done by another recent run on this tenant (--resend sends them)
    failed_before: int  # failed for good earlier: left for `batcher replay`
    batch_size: int  # users per request (ID lists)
    not_selected: int = 0  # a replay: failed or unknown, left out by --only / --action
    skipped_by: tuple[Skipped, ...] = ()  # the users newly skipped in this plan, by reason
    guarded: int = 0  # users the guards keep from it (protected, or held back): no step

    @property
    def requests(self) -> int:
        """HTTP requests at the least: lists of IDs, or JSON batches of 20 per-user requests."""
        per = (
            min(self.batch_size, self.action.max_ids)
            if self.action.shape is Shape.ID_LIST
            else MAX_BATCH
        )
        return math.ceil(self.to_send.len() / per)

    @property
    def cost(self) -> int:
        """What the sends spend of their budget: requests, or inner requests of JSON batches."""
        if self.action.shape is Shape.ID_LIST:
            return self.requests
        if self.action.lists is not None:  # a list per user, then a request per item found
            return self.to_send.len() * (1 + self.action.lists.expect)
        return self.to_send.len()


@dataclass(frozen=True)
class Plan:
    """Users first seen in this run (to record), and each action's plan, in the safe order."""

    new_users: pl.DataFrame  # USER_COLUMNS
    actions: tuple[ActionPlan, ...]
    # the guards' verdict on every user (user_id, verdict, why, roles); None: not decided
    guarded: pl.DataFrame | None = None

    @property
    def to_send(self) -> int:
        return sum(a.to_send.len() for a in self.actions)

    @property
    def users_to_act(self) -> int:
        """Distinct users with at least one step to send."""
        return _distinct([p.to_send for p in self.actions])

    @property
    def users_in_reach(self) -> int:
        """Distinct users with a step to send of an action that changes accounts (the blast
        radius the gate weighs: confirming risk alone is not in it)."""
        return _distinct([p.to_send for p in self.actions if p.action.in_blast_radius])

    def of(self, name: str) -> ActionPlan | None:
        return next((a for a in self.actions if a.action.name == name), None)

    def seconds_by_action(self, specs: Mapping[Budget, BudgetSpec]) -> dict[str, float]:
        """When each action's sends end at the least, from the start: its budget's window
        goes at once, the rest at the window's rate. Actions on one budget share it in the
        plan's order; budgets are spent at the same time."""
        spent: dict[Budget, float] = {}
        ends: dict[str, float] = {}
        for plan in self.actions:
            budget = plan.action.budget
            spent[budget] = spent.get(budget, 0.0) + plan.cost
            ends[plan.action.name] = specs[budget].seconds_for(spent[budget]) if plan.cost else 0.0
        return ends

    def seconds_at(self, specs: Mapping[Budget, BudgetSpec]) -> float:
        """Time the sends take at the least: the slowest action's end."""
        return max(self.seconds_by_action(specs).values(), default=0.0)


def make_plan(
    users: pl.DataFrame,
    known: pl.DataFrame,
    actions: Sequence[Action],
    batch_size: int,
    elsewhere: pl.DataFrame | None = None,
) -> Plan:
    """``users`` (USER_COLUMNS, input order) against the ledger's ``known`` steps (user_id,
    action, state) and ``elsewhere``: (user_id, action) done by other recent runs."""
    users = with_properties(users)
    if known.height == 0 and (elsewhere is None or elsewhere.height == 0):
        # A first run: everything is new (and the joins would cost seconds on big inputs).
        plans = []
        for action in actions:
            skip = _skips(action)
            skipped = users.filter(skip).get_column("user_id")
            plans.append(
                ActionPlan(
                    action,
                    to_send=users.filter(~skip).get_column("user_id"),
                    skipped=skipped,
                    already_done=0,
                    done_elsewhere=0,
                    failed_before=0,
                    batch_size=batch_size,
                    skipped_by=skipped_by(action, users, skipped),
                )
            )
        return Plan(users, tuple(plans))
    known_users = known.select("user_id").unique()
    new_users = users.join(known_users, on="user_id", how="anti", maintain_order="left")
    planned: dict[str, ActionPlan] = {}
    for action in actions:  # the table's order: the steps it comes after are planned before it
        firsts = [planned[name].to_send for name in comes_after(action) if name in planned]
        resent = pl.concat(firsts).unique() if firsts else None
        planned[action.name] = action_plan(users, known, action, batch_size, elsewhere, resent)
    return Plan(new_users, tuple(planned.values()))


def action_plan(
    users: pl.DataFrame,
    known: pl.DataFrame,
    action: Action,
    batch_size: int,
    elsewhere: pl.DataFrame | None = None,
    resent: pl.Series | None = None,
) -> ActionPlan:
    """One action's plan for ``users`` against the ledger's ``known`` steps. ``resent``: the
    users whose ``after`` step this run sends: theirs is sent again after it, whatever other
    ledgers did (a revoke is only as good as the moment it was sent)."""
    users = with_properties(users)
    steps = known.filter(pl.col("action") == action.name).select("user_id", "state")
    joined = users.join(steps, on="user_id", how="left", maintain_order="left")
    if elsewhere is not None and elsewhere.height:
        done_there = elsewhere.filter(pl.col("action") == action.name).select(
            "user_id", pl.lit(True).alias("elsewhere")
        )
        joined = joined.join(
            done_there.unique("user_id"), on="user_id", how="left", maintain_order="left"
        )
    else:
        joined = joined.with_columns(elsewhere=pl.lit(None, pl.Boolean))
    state = pl.col("state")
    open_ = state.is_null() | state.is_in(_TO_SEND)
    skip = _skips(action) & open_
    again = pl.lit(False) if resent is None else pl.col("user_id").is_in(resent.implode())
    there = open_ & ~skip & pl.col("elsewhere").fill_null(False) & ~again
    return ActionPlan(
        action,
        to_send=joined.filter(open_ & ~skip & ~there).get_column("user_id"),
        skipped=joined.filter(skip | (state == StepState.SKIPPED)).get_column("user_id"),
        already_done=joined.filter(state == StepState.DONE).height,
        done_elsewhere=joined.filter(there).height,
        failed_before=joined.filter(state == StepState.FAILED).height,
        batch_size=batch_size,
        skipped_by=skipped_by(action, users, joined.filter(skip).get_column("user_id")),
    )


def guard(plan: Plan, verdicts: pl.DataFrame) -> Plan:
    """``plan`` less the steps the guards' ``verdicts`` (user_id, verdict, why, roles) withhold:
    nothing for a protected user, no action that touches access for one held back. They get
    no step (not a skipped one): a later run with --include-admins, or another config, acts."""
    kept = verdicts.filter(pl.col("verdict") != Verdict.ACT)
    if not kept.height:
        return replace(plan, guarded=verdicts)
    items = []
    for item in plan.actions:
        out = [
            uid
            for uid, verdict in kept.select("user_id", "verdict").iter_rows()
            if withheld(item.action, verdict)
        ]
        if not out:
            items.append(item)
            continue
        sends = item.to_send.filter(~item.to_send.is_in(out))
        items.append(replace(item, to_send=sends, guarded=item.to_send.len() - sends.len()))
    return replace(plan, actions=tuple(items), guarded=verdicts)


def _distinct(series: list[pl.Series]) -> int:
    """How many distinct user IDs the series hold together."""
    series = [s for s in series if s.len()]
    if len(series) <= 1:
        return series[0].len() if series else 0
    return pl.concat(series).n_unique()
