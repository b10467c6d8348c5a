"""Planning: for each action, what still needs sending given the ledgers' states."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
import pytest

from batcher.actions import Budget, choose
from batcher.pacer import BudgetSpec, Limit
from batcher.plan import USER_COLUMNS, make_plan
from tests.helpers import ids

KNOWN = {"user_id": pl.String, "action": pl.String, "state": pl.String}
NOTHING_KNOWN = pl.DataFrame(schema=KNOWN)
# Identity Protection: one a second, no burst (the first goes at once, each next a second on).
# Directory writes: a window of 200 that goes at once, then 20 a second (small, to show both).
SPECS = {
    Budget.IDENTITY_PROTECTION: BudgetSpec((Limit.steady(1.0),), at_once=1),
    Budget.DIRECTORY_WRITES: BudgetSpec((Limit(200, 10.0),), at_once=20),
    Budget.DIRECTORY_READS: BudgetSpec((Limit.steady(300.0),), at_once=20),
}


def users(user_ids: Sequence[str], guests: Sequence[str] = ()) -> pl.DataFrame:
    n = len(user_ids)
    data: dict[str, Any] = {
        "user_id": list(user_ids),
        "source_file": ["users.csv"] * n,
        "source_row": list(range(2, n + 2)),
        "input_value": list(user_ids),
        "matched_by": ["object_id"] * n,
        "user_type": ["Guest" if u in guests else "Member" for u in user_ids],
        "account_enabled": [True] * n,
    }
    return pl.DataFrame(data, schema=USER_COLUMNS)


def known(*steps: tuple[str, str, str]) -> pl.DataFrame:
    return pl.DataFrame(list(steps), schema=KNOWN, orient="row")


def done_elsewhere(*steps: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        list(steps), schema={"user_id": pl.String, "action": pl.String}, orient="row"
    )


def test_plan_skips_done_and_failed_and_resends_the_rest() -> None:
    uids = ids(7)
    plan = make_plan(
        users(uids),
        known(
            (uids[0], "confirm", "done"),
            (uids[1], "confirm", "failed"),
            (uids[2], "confirm", "sending"),
            (uids[3], "confirm", "unknown"),
            (uids[4], "confirm", "planned"),
            (uids[5], "confirm", "skipped"),
        ),
        choose(["confirm"]),
        batch_size=2,
    )
    [confirm] = plan.actions
    assert confirm.to_send.to_list() == [uids[2], uids[3], uids[4], uids[6]]  # input order
    assert confirm.already_done == 1
    assert confirm.failed_before == 1  # left for `batcher replay`
    assert confirm.skipped.to_list() == [uids[5]]
    assert confirm.done_elsewhere == 0
    assert plan.new_users.get_column("user_id").to_list() == [uids[6]]
    assert confirm.requests == 2
    assert plan.to_send == 4
    assert plan.users_to_act == 4
    assert plan.seconds_at(SPECS) == 1.0  # 2 requests at 1/s: the second a second after


def test_a_first_run_sends_everything_and_records_every_user() -> None:
    uids = ids(5)
    plan = make_plan(users(uids), NOTHING_KNOWN, choose(["disable", "confirm"]), batch_size=60)
    assert plan.new_users.get_column("user_id").to_list() == uids
    assert [p.action.name for p in plan.actions] == ["disable", "confirm"]
    for action_plan in plan.actions:
        assert action_plan.to_send.to_list() == uids
        assert (action_plan.already_done, action_plan.failed_before) == (0, 0)
        assert action_plan.skipped.len() == 0
    assert plan.to_send == 10
    assert plan.users_to_act == 5


def test_steps_are_planned_per_action() -> None:
    uids = ids(3)
    plan = make_plan(
        users(uids),
        known(
            (uids[0], "disable", "done"),
            (uids[0], "revoke-sessions", "planned"),
            (uids[1], "disable", "failed"),
        ),
        choose(["disable", "revoke-sessions"]),
        batch_size=60,
    )
    disable, revoke = plan.actions
    assert disable.to_send.to_list() == [uids[2]]
    assert (disable.already_done, disable.failed_before) == (1, 1)
    assert revoke.to_send.to_list() == uids  # a failed disable still gets its revoke
    assert plan.new_users.get_column("user_id").to_list() == [uids[2]]
    assert plan.users_to_act == 3
    assert plan.of("revoke-sessions") is revoke
    assert plan.of("confirm") is None


@pytest.mark.parametrize("first_run", [True, False], ids=["first-run", "resume"])
def test_guests_are_skipped_for_actions_that_cannot_reach_them(first_run: bool) -> None:
    uids = ids(4)
    guests = (uids[1], uids[3])
    before = NOTHING_KNOWN if first_run else known((uids[0], "disable", "planned"))
    plan = make_plan(
        users(uids, guests),
        before,
        choose(["disable", "revoke-sessions", "confirm"]),
        batch_size=60,
    )
    disable, revoke, confirm = plan.actions
    assert disable.to_send.to_list() == uids  # a guest can be blocked from signing in here
    assert disable.skipped.len() == 0
    for skipping in (revoke, confirm):
        assert skipping.to_send.to_list() == [uids[0], uids[2]]
        assert skipping.skipped.to_list() == list(guests)
    assert plan.users_to_act == 4


def test_a_guest_already_settled_is_not_skipped_again() -> None:
    uids = ids(2)
    plan = make_plan(
        users(uids, guests=uids),
        known((uids[0], "confirm", "done"), (uids[1], "confirm", "skipped")),
        choose(["confirm"]),
        batch_size=60,
    )
    [confirm] = plan.actions
    assert confirm.already_done == 1
    assert confirm.skipped.to_list() == [uids[1]]
    assert confirm.to_send.len() == 0
    assert plan.users_to_act == 0
    assert plan.seconds_at(SPECS) == 0.0


def test_steps_done_by_another_recent_run_are_left_out() -> None:
    uids = ids(5)
    plan = make_plan(
        users(uids),
        known((uids[0], "confirm", "done")),
        choose(["confirm", "disable"]),
        batch_size=60,
        elsewhere=done_elsewhere(
            (uids[0], "confirm"),  # done here too: it counts as done here
            (uids[1], "confirm"),
            (uids[1], "confirm"),  # two other ledgers did it: one user
            (uids[2], "confirm"),
            (uids[3], "disable"),
        ),
    )
    disable, confirm = plan.actions
    assert confirm.to_send.to_list() == [uids[3], uids[4]]
    assert confirm.done_elsewhere == 2
    assert confirm.already_done == 1
    assert disable.to_send.to_list() == [uids[0], uids[1], uids[2], uids[4]]
    assert disable.done_elsewhere == 1


def test_done_elsewhere_counts_on_a_first_run_too() -> None:
    uids = ids(3)
    plan = make_plan(
        users(uids),
        NOTHING_KNOWN,
        choose(["confirm"]),
        batch_size=60,
        elsewhere=done_elsewhere((uids[1], "confirm")),
    )
    [confirm] = plan.actions
    assert confirm.to_send.to_list() == [uids[0], uids[2]]
    assert confirm.done_elsewhere == 1
    assert plan.new_users.height == 3


@pytest.mark.parametrize(
    ("batch_size", "requests"), [(60, 3), (50, 3), (1, 125), (100, 3)], ids=str
)
def test_requests_never_carry_more_than_the_batch_size(batch_size: int, requests: int) -> None:
    plan = make_plan(users(ids(125)), NOTHING_KNOWN, choose(["confirm"]), batch_size=batch_size)
    [confirm] = plan.actions
    assert confirm.requests == requests  # never more than 60 IDs, whatever was asked
    assert confirm.cost == requests
    assert plan.seconds_at(SPECS) == float(requests - 1)  # one a second after the first


def test_per_user_actions_go_twenty_to_a_json_batch_and_cost_one_each() -> None:
    plan = make_plan(users(ids(45)), NOTHING_KNOWN, choose(["disable"]), batch_size=60)
    [disable] = plan.actions
    assert disable.requests == 3  # 20 + 20 + 5
    assert disable.cost == 45  # each inner request spends the directory-writes budget
    assert plan.seconds_at(SPECS) == 0.0  # 45 fit in the window of 200: all at once
    window_of_20 = {**SPECS, Budget.DIRECTORY_WRITES: BudgetSpec((Limit(20, 1.0),), 20)}
    assert plan.seconds_at(window_of_20) == pytest.approx((45 - 20) / 20)


def test_seconds_at_is_the_slowest_budget_as_budgets_are_spent_together() -> None:
    plan = make_plan(
        users(ids(120)),
        NOTHING_KNOWN,
        choose(["disable", "revoke-sessions", "confirm"]),
        batch_size=60,
    )
    # Identity Protection: 2 requests at 1/s = 1 s. Directory writes: disable's 120 fit in
    # the window of 200; revoke's 120 come after them on the same budget: 40 past the window
    # at 20/s = 2 s. The lanes run at the same time: the slowest decides.
    assert plan.seconds_by_action(SPECS) == pytest.approx(
        {"disable": 0.0, "revoke-sessions": 2.0, "confirm": 1.0}
    )
    assert plan.seconds_at(SPECS) == pytest.approx(2.0)
    slow_risk = {**SPECS, Budget.IDENTITY_PROTECTION: BudgetSpec((Limit.steady(0.1),), 1)}
    assert plan.seconds_at(slow_risk) == pytest.approx(10.0)


def test_users_to_act_counts_each_user_once() -> None:
    uids = ids(6)
    plan = make_plan(
        users(uids),
        known(
            (uids[0], "disable", "done"),
            (uids[1], "disable", "done"),
            (uids[0], "confirm", "done"),
        ),
        choose(["disable", "confirm"]),
        batch_size=60,
    )
    assert plan.to_send == 4 + 5
    assert plan.users_to_act == 5  # uids[1] for confirm only, uids[0] for nothing
    empty = make_plan(users([]), NOTHING_KNOWN, choose(["confirm"]), batch_size=60)
    assert (empty.to_send, empty.users_to_act, empty.seconds_at(SPECS)) == (0, 0, 0.0)
