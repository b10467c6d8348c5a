"""The action table: every action described fully, chosen in a safe order, reversed for undo."""

from __future__ import annotations

import pytest

from batcher.actions import (
    ACTIONS,
    AFTER_SENT,
    CONTAIN,
    DEFAULT_ACTION,
    ORDER,
    READS,
    Action,
    Budget,
    Read,
    Shape,
    action_named,
    choose,
    comes_after,
    names,
    permission_for,
    reverse,
    sent_after,
)
from batcher.errors import ConfigError

EVERY = list(ACTIONS.values())


def chosen(*wanted: str) -> list[str]:
    return [a.name for a in choose(wanted)]


# -- the table -----------------------------------------------------------------------------------
def test_the_table_holds_every_action_under_its_own_name() -> None:
    assert set(ACTIONS) == {
        "confirm",
        "dismiss",
        "disable",
        "enable",
        "reset-password",
        "revoke-sessions",
        "remove-auth-methods",
        "disable-mail-rules",
        "enable-mail-rules",
    }
    assert all(name == action.name for name, action in ACTIONS.items())
    assert DEFAULT_ACTION == "confirm"
    assert set(CONTAIN) <= set(ACTIONS)


@pytest.mark.parametrize("action", EVERY, ids=lambda a: a.name)
def test_every_action_has_a_check_with_yes_and_no_words(action: Action) -> None:
    check = action.check
    assert isinstance(check.read, Read)
    assert check.field
    assert check.yes and check.no
    assert check.yes != check.no
    assert " " not in check.yes + check.no  # they are report values, one word each


@pytest.mark.parametrize("action", EVERY, ids=lambda a: a.name)
def test_every_action_names_its_permission_and_what_it_does(action: Action) -> None:
    assert "." in action.permission  # a Graph permission: Resource.Verb.Scope
    assert action.does.strip() == action.does
    assert len(action.does.split()) >= 3  # a line for the gate: "{n} users <does>"
    assert action.path.startswith("/")
    if action.lists is None:
        assert action.method in ("POST", "PATCH")
    else:  # a list-then-act step: its request lists the items, each item is then acted on
        assert (action.method, action.path) == ("GET", action.lists.path)
        assert action.lists.act in ("PATCH", "DELETE")
        assert action.lists.item_path.startswith(action.lists.path.split("/{")[0])


@pytest.mark.parametrize("action", EVERY, ids=lambda a: a.name)
def test_every_action_fits_its_shape_and_budget(action: Action) -> None:
    assert isinstance(action.budget, Budget)  # per-user actions need not share one
    if action.shape is Shape.ID_LIST:
        assert action.max_ids == 60
        assert action.budget is Budget.IDENTITY_PROTECTION
        assert "{id}" not in action.path
    else:
        assert action.max_ids == 1
        assert "{id}" in action.path


def test_per_user_actions_write_to_the_directory_unless_they_list_then_act() -> None:
    per_user = [a for a in EVERY if a.shape is Shape.PER_USER]
    assert {a.budget for a in per_user if a.lists is None} == {Budget.DIRECTORY_WRITES}
    for action in (a for a in per_user if a.lists is not None):
        # the list and its items are paced on the budget Graph counts them on, never writes'
        assert action.budget is not Budget.DIRECTORY_WRITES
    assert ACTIONS["remove-auth-methods"].budget is Budget.REPORTS
    assert ACTIONS["disable-mail-rules"].budget is Budget.OUTLOOK  # per mailbox


@pytest.mark.parametrize("action", EVERY, ids=lambda a: a.name)
def test_undo_after_and_clashes_name_actions_in_the_table(action: Action) -> None:
    for other in (action.undo, action.after, *action.clashes):
        assert other is None or other in ACTIONS
    assert isinstance(action.clashes, tuple)
    for clash in action.clashes:  # a clash goes both ways
        assert action.name in ACTIONS[clash].clashes
    if action.after is not None:  # what must come first comes first in the safe order
        assert ORDER.index(action.after) < ORDER.index(action.name)


def test_the_details_of_each_action() -> None:
    disable, enable = ACTIONS["disable"], ACTIONS["enable"]
    assert (disable.method, disable.path, disable.body) == (
        "PATCH",
        "/users/{id}",
        {"accountEnabled": False},
    )
    assert enable.body == {"accountEnabled": True}
    assert (disable.check.field, disable.check.expect) == ("accountEnabled", False)
    revoke = ACTIONS["revoke-sessions"]
    assert revoke.path == "/users/{id}/revokeSignInSessions"
    # revoking first would let the attacker back in: after the reset, else after the block
    assert revoke.after == "reset-password"
    assert comes_after(revoke) == ("reset-password", "disable")
    assert revoke.check.expect == AFTER_SENT
    assert revoke.undo is None
    confirm = ACTIONS["confirm"]
    assert confirm.path == "/identityProtection/riskyUsers/confirmCompromised"
    assert confirm.check.expect == "confirmedCompromised"
    assert (confirm.undo, ACTIONS["dismiss"].undo) == ("dismiss", None)
    assert (disable.undo, enable.undo) == ("enable", "disable")


@pytest.mark.parametrize("action", EVERY, ids=lambda a: a.name)
def test_an_action_that_cannot_be_undone_says_what_stays(action: Action) -> None:
    assert (action.undo is None) == (action.cannot_undo is not None)


def test_what_the_table_says_instead_of_names_spelt_elsewhere() -> None:
    assert [a.name for a in EVERY if a.keeps_disabled] == ["enable"]
    assert [a.name for a in EVERY if a.warn_failed] == ["disable"]
    assert ACTIONS["revoke-sessions"].cannot_undo == "revoked sessions stay revoked"
    assert [a.name for a in sent_after("disable")] == [
        "reset-password",
        "revoke-sessions",
        "remove-auth-methods",
        "disable-mail-rules",
    ]
    assert [a.name for a in sent_after("revoke-sessions")] == [
        "remove-auth-methods",
        "disable-mail-rules",
    ]
    warning = ACTIONS["disable"].warn_failed or ""
    assert warning.format(accounts="2 accounts", stay="they stay") == (
        "2 accounts could not be disabled: they stay enabled"
    )


def test_a_request_for_several_actions_names_each_ones_own_permission() -> None:
    disable, enable, revoke = ACTIONS["disable"], ACTIONS["enable"], ACTIONS["revoke-sessions"]
    assert permission_for([disable, disable]) == disable.permission
    assert permission_for([disable, enable]) == disable.permission  # they share it
    both = permission_for([disable, revoke, disable])
    assert both == (f"{disable.permission} for disable and {revoke.permission} for revoke-sessions")


def test_each_read_has_its_budget_and_permission() -> None:
    assert READS[Read.RISKY_USER].budget is Budget.IDENTITY_PROTECTION
    assert READS[Read.RISKY_USER].permission == "IdentityRiskyUser.Read.All"
    assert READS[Read.USER].budget is Budget.DIRECTORY_READS
    assert READS[Read.USER].permission.startswith("User.Read.All")
    # a list-then-act step is read again where it was listed: its listing's budget and path
    assert {a.check.read for a in EVERY if a.lists is None} <= set(READS)
    assert all(a.check.read is Read.LISTED for a in EVERY if a.lists is not None)


def test_guests_are_skipped_where_the_home_tenant_holds_the_state() -> None:
    skipping = {a.name for a in EVERY if a.skips_guests}
    assert skipping == {"confirm", "dismiss", "revoke-sessions"}
    assert all("home tenant" in (a.skips_guests or "") for a in EVERY if a.skips_guests)


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("confirm", "confirm"),
        ("confirmCompromised", "confirm"),  # a ledger written before actions were data
        ("dismiss", "dismiss"),
        ("revoke-sessions", "revoke-sessions"),
    ],
)
def test_action_named_knows_legacy_names(name: str, expected: str) -> None:
    assert action_named(name).name == expected


def test_an_unknown_action_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="unknown action 'compromise'") as raised:
        action_named("compromise")
    assert all(name in str(raised.value) for name in ACTIONS)


def test_names_joins_them_with_commas() -> None:
    assert names(choose(["revoke-sessions", "disable"])) == "disable,revoke-sessions"
    assert names([]) == ""


# -- choosing ------------------------------------------------------------------------------------
def test_no_choice_is_the_default_action() -> None:
    assert chosen() == ["confirm"]


def test_choose_puts_them_in_each_users_safe_order() -> None:
    assert chosen("revoke-sessions", "confirm", "disable") == [
        "disable",
        "revoke-sessions",
        "confirm",
    ]
    assert chosen(*CONTAIN) == ["disable", "revoke-sessions", "confirm"]
    assert chosen("revoke-sessions", "enable") == ["enable", "revoke-sessions"]


def test_choose_takes_each_action_once_whatever_its_name() -> None:
    assert chosen("confirm", "confirmCompromised", "confirm") == ["confirm"]


@pytest.mark.parametrize(
    "pair",
    [("confirm", "dismiss"), ("disable", "enable"), ("confirmCompromised", "dismiss")],
)
def test_contradicting_actions_are_refused(pair: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match="contradict each other") as raised:
        choose(pair)
    message = str(raised.value)
    for name in pair:
        assert action_named(name).name in message


def test_a_clash_is_refused_among_other_actions_too() -> None:
    with pytest.raises(ConfigError, match="--action disable and --action enable"):
        choose(["revoke-sessions", "enable", "confirm", "disable"])


def test_an_unknown_name_among_good_ones_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown action"):
        choose(["confirm", "delete"])


# -- reversing -----------------------------------------------------------------------------------
def test_reverse_pairs_each_action_with_its_undo() -> None:
    pairs = [
        (a.name, b.name) for a, b in reverse(choose(["disable", "revoke-sessions", "confirm"]))
    ]
    assert pairs == [("disable", "enable"), ("confirm", "dismiss")]


def test_actions_without_an_undo_are_left_out() -> None:
    assert reverse([ACTIONS["revoke-sessions"], ACTIONS["dismiss"]]) == ()
    assert [(a.name, b.name) for a, b in reverse([ACTIONS["enable"]])] == [("enable", "disable")]
