"""A list-then-act step's child items in the ledger: what was listed, each item's state and
before-image (its evidence), through the guarded moves of ``moves.py``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from batcher.ledger.moves import ITEM_ANSWER, ITEM_START, ITEM_UNDONE
from batcher.ledger.states import ItemState, move, now
from batcher.ledger.store import Store
from batcher.outcomes import Answer

ItemKey = tuple[str, str, str]  # (user_id, action, item_id)


@dataclass(frozen=True)
class Item:
    """One child item as listed: its ID, kind, order, first state (planned or kept, with the
    reason) and before-image (already masked: the ledger stores what it is given)."""

    item_id: str
    kind: str
    position: int
    state: ItemState
    before: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


class Items(Store):
    """The named transitions of child items; one transaction each."""

    def listed(self, user_id: str, action: str) -> bool:
        """Whether this user's list was read and recorded already (a resume does not read it
        again)."""
        row = self._conn.execute(
            "SELECT 1 FROM listings WHERE user_id = ? AND action = ?", (user_id, action)
        ).fetchone()
        return row is not None

    def record_listing(self, user_id: str, action: str, items: Sequence[Item]) -> None:
        """What one list answered, with each item's first state: in one transaction, so a kill
        leaves either the whole list or none of it."""
        stamp = now()
        with self._write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO listings (user_id, action, listed_at, found) "
                "VALUES (?, ?, ?, ?)",
                (user_id, action, stamp, len(items)),
            )
            if cur.rowcount == 0:
                return  # listed before: the first list stands
            db.executemany(
                "INSERT INTO items (user_id, action, item_id, kind, position, state, reason, "
                "before) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        user_id,
                        action,
                        i.item_id,
                        i.kind,
                        i.position,
                        i.state.value,
                        i.reason,
                        json.dumps(i.before, sort_keys=True),
                    )
                    for i in items
                ),
            )

    def items_of(
        self, user_id: str, action: str, states: Sequence[ItemState] | None = None
    ) -> list[Item]:
        """This user's items of ``action`` (in ``states``), in the order to act on them."""
        query = (
            "SELECT item_id, kind, position, state, before, reason FROM items "
            "WHERE user_id = ? AND action = ?"
        )
        args: list[object] = [user_id, action]
        if states is not None:
            query += f" AND state IN ({', '.join('?' * len(states))})"
            args += [s.value for s in states]
        rows = self._conn.execute(query + " ORDER BY position, item_id", args).fetchall()
        return [Item(r[0], r[1], int(r[2]), ItemState(r[3]), json.loads(r[4]), r[5]) for r in rows]

    def item_rows(self, action: str | None = None) -> list[dict[str, Any]]:
        """Every item (of ``action``), for the report: who, what, its state, why, evidence."""
        query = (
            "SELECT user_id, action, item_id, kind, state, reason, before, last_status, "
            "error_code, error_message, request_id, finished_at, undone_at FROM items"
        )
        args: tuple[object, ...] = ()
        if action is not None:
            query, args = query + " WHERE action = ?", (action,)
        cursor = self._conn.execute(query + " ORDER BY rowid", args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def start_item(self, key: ItemKey, client_request_id: str) -> None:
        """The intent to act on one item, committed before its request leaves."""
        with self._write() as db:
            move(db, ITEM_START, [((client_request_id, now()), key)], expect=1)

    def finish_item(
        self, key: ItemKey, state: ItemState, answer: Answer, reason: str | None = None
    ) -> None:
        """Graph's answer for one item and the state it settles it in (planned: send again)."""
        sets = (
            state.value,
            reason,
            answer.http_status,
            answer.error_code,
            answer.error_message,
            answer.request_id,
            now(),
        )
        with self._write() as db:
            move(db, ITEM_ANSWER, [(sets, key)], expect=1)

    def undone_items(self, keys: Sequence[ItemKey]) -> None:
        """An undo put these items back (re-enabled the rules)."""
        if not keys:
            return
        stamp = now()
        with self._write() as db:
            move(db, ITEM_UNDONE, [((stamp,), key) for key in keys], expect=len(keys))
