"""The ledger's guarded step transitions: which steps each may move, from which states."""

from __future__ import annotations

from batcher.ledger.states import IN_FLIGHT, ITEM_TO_SEND, SENDABLE, ItemState, Move, StepState

Key = tuple[str, str]  # (user_id, action): one step
PLANNED, SENDING, DONE = StepState.PLANNED, StepState.SENDING, StepState.DONE
FAILED, UNKNOWN, SKIPPED = StepState.FAILED, StepState.UNKNOWN, StepState.SKIPPED
BY_KEY, BY_BATCH = "user_id = ? AND action = ?", "batch_id = ?"

# The guarded transitions: which steps each may move, from which states (``move`` checks).
START = Move(
    "start_batch",
    "state = ?, batch_id = ?, attempts = attempts + 1, in_flight = 1, client_request_id = ?, "
    "sent_at = COALESCE(sent_at, ?)",
    BY_KEY,
    SENDABLE,
)
RETRY = Move(
    "start_attempt",
    "attempts = attempts + 1, in_flight = 1, client_request_id = ?",
    BY_BATCH,
    IN_FLIGHT,
)
# An answer recorded on steps: no longer in flight, maybe applied (once maybe, always), the
# last answer, and the final state when it settles them (None: still 'sending').
ANSWERED = (
    "in_flight = 0, maybe_applied = maybe_applied OR ?, last_status = ?, error_code = ?, "
    "error_message = ?, request_id = ?, state = COALESCE(?, state), "
    "finished_at = CASE WHEN ? IS NULL THEN finished_at ELSE ? END"
)
ANSWER = Move("finish_attempt", ANSWERED, BY_BATCH, IN_FLIGHT)
ANSWER_EACH = Move("finish_steps", ANSWERED, BY_KEY, IN_FLIGHT)
SETTLE = Move(
    "settle_batch",
    "state = ?, last_status = ?, error_code = ?, error_message = ?, request_id = ?, "
    "finished_at = ?",
    BY_BATCH,
    IN_FLIGHT,
)
SETTLES_TO = frozenset({DONE, FAILED, UNKNOWN})  # what an answer may settle a step (a batch) as

# A list-then-act step's child items (``items``): the same guards, on their own table.
ITEM_KEY = "user_id = ? AND action = ? AND item_id = ?"
ITEM_START = Move(
    "start_item",
    "state = 'sending', attempts = attempts + 1, client_request_id = ?, "
    "sent_at = COALESCE(sent_at, ?)",
    ITEM_KEY,
    ITEM_TO_SEND,
    table="items",
)
ITEM_ANSWER = Move(
    "finish_item",
    "state = ?, reason = ?, last_status = ?, error_code = ?, error_message = ?, "
    "request_id = ?, finished_at = ?",
    ITEM_KEY,
    frozenset({ItemState.SENDING}),
    table="items",
)
ITEM_RECOVER = Move(  # a killed or stopped run left it 'sending': it may have been applied
    "recover_item",
    "state = 'unknown'",
    "action = ? AND state = 'sending'",
    frozenset({ItemState.SENDING}),
    table="items",
)
ITEM_UNDONE = Move(
    "undo_item",
    "undone_at = ?",
    ITEM_KEY,
    frozenset({ItemState.DONE, ItemState.UNKNOWN}),
    table="items",
)
