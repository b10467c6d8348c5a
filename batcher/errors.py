"""The project's own error types; only the CLI turns them into exit codes."""

from __future__ import annotations

from typing import Any


class BatcherError(Exception):
    """An error the operator can act on; its message is one line that says what to do."""


class ConfigError(BatcherError):
    """A setting is missing, unknown or invalid."""


class InputError(BatcherError):
    """An input file cannot be read or holds no usable IDs."""


class LedgerError(BatcherError):
    """The ledger cannot be opened, is foreign, or does not match this run."""


class OutputError(BatcherError):
    """A file batcher writes (a report, a table) cannot be written where it was asked."""


class NotConfirmed(BatcherError):
    """The operator did not confirm the send (or could not be asked)."""


class AuthError(BatcherError):
    """Sign-in or permission failed; nothing more can be sent until it is fixed."""


class Unreachable(BatcherError):
    """Graph could not be reached (refused, name not resolved, TLS not trusted, no route)."""


class GraphError(Exception):
    """An answer from Graph (or no answer) for one request; raised by the graph client only."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        client_request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.retry_after = retry_after


class Throttled(GraphError):
    """429: the tenant's shared budget is spent; back off for everyone."""


class ServerError(GraphError):
    """500, 502, 503, 504: Graph could not answer now; the batch may be retried."""


class NoAnswer(GraphError):
    """Timeout or broken connection: the request may or may not have been applied.

    ``cause`` says what happened in a few words; ``host`` is where the request went.
    """

    def __init__(self, message: str, *, cause: str = "", host: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.cause = cause
        self.host = host


class NotConnected(NoAnswer):
    """No connection was made (refused, name not resolved, TLS not trusted, connect timeout):
    the request never left, so Graph did not apply it."""


class BadRequest(GraphError):
    """400: something in the batch was refused; split it to find the offending IDs."""


class Unauthorized(GraphError):
    """401: the token was refused; refresh once, then stop."""


class Forbidden(GraphError):
    """403: the app or user lacks the permission, or (for one user) a privileged role."""


class NotFound(GraphError):
    """404: no such user (or resource)."""


class Rejected(GraphError):
    """Any other 4xx: a permanent answer for this batch."""


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (possibly nested) exception groups from task groups, or
    ``exc`` itself when it is not a group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
