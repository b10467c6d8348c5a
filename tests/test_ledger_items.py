"""A list-then-act step's child items in the real SQLite ledger: listed once, guarded moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher.ledger import IllegalTransition, Item, ItemState, Ledger, RunScope
from batcher.outcomes import Answer, Outcome

SCOPE = RunScope(("remove-auth-methods",), "contoso", "global", "v1.0")


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger.open(tmp_path / "l.sqlite", SCOPE)


def test_a_list_is_recorded_once_and_a_second_list_does_not_replace_it(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    first = [
        Item("m1", "phone", 1, ItemState.PLANNED, {"phoneNumber": "*********67"}),
        Item("pw", "password", 0, ItemState.KEPT, {}, "the password cannot be deleted"),
    ]
    ledger.record_listing("u1", "remove-auth-methods", first)
    ledger.record_listing("u1", "remove-auth-methods", [Item("m9", "email", 0, ItemState.PLANNED)])
    assert ledger.listed("u1", "remove-auth-methods")
    assert not ledger.listed("u2", "remove-auth-methods")
    items = ledger.items_of("u1", "remove-auth-methods")
    assert [(i.item_id, i.state, i.before) for i in items] == [
        ("pw", ItemState.KEPT, {}),
        ("m1", ItemState.PLANNED, {"phoneNumber": "*********67"}),
    ]


def test_an_item_moves_only_through_its_guarded_transitions(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record_listing(
        "u1",
        "remove-auth-methods",
        [Item("m1", "fido2", 0, ItemState.PLANNED), Item("pw", "password", 1, ItemState.KEPT)],
    )
    key = ("u1", "remove-auth-methods", "m1")
    ledger.start_item(key, "crid-1")
    ledger.finish_item(key, ItemState.GONE, Answer(Outcome.NOT_FOUND, 404, "NotFound", "gone"))
    with pytest.raises(IllegalTransition, match="start_item cannot move"):
        ledger.start_item(key, "crid-2")
    with pytest.raises(IllegalTransition):
        ledger.start_item(("u1", "remove-auth-methods", "pw"), "crid-3")
    (row,) = [r for r in ledger.item_rows() if r["item_id"] == "m1"]
    assert (row["state"], row["last_status"]) == ("gone", 404)
