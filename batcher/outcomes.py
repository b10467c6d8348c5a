"""What one attempt at a Graph request got back: the client says it, the ledger records it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """What one attempt got back."""

    ACCEPTED = "accepted"
    THROTTLED = "throttled"
    SERVER_ERROR = "server_error"
    NO_ANSWER = "no_answer"
    NOT_CONNECTED = "not_connected"  # no connection was made: the request never left
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    REJECTED = "rejected"


# Answers after which Graph may have applied the request (nothing else means it did not).
MAYBE_APPLIED = frozenset({Outcome.ACCEPTED, Outcome.SERVER_ERROR, Outcome.NO_ANSWER})


@dataclass(frozen=True)
class Answer:
    """The outcome of one attempt as the ledger records it."""

    outcome: Outcome
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None

    @property
    def maybe_applied(self) -> bool:
        return self.outcome in MAYBE_APPLIED
