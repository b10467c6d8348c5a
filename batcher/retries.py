"""What is retried, how long to wait between tries, and when to give up."""

from __future__ import annotations

import copy
import random
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from batcher.errors import NoAnswer, ServerError, Throttled

# Answers worth another try. (A 401 never gets here: the graph client's auth flow signs in
# afresh once and tries again, and stops the run if that does not help.)
RETRYABLE = (Throttled, ServerError, NoAnswer)


class wait_unless_paced(wait_base):
    """No extra wait after a 429 or a Retry-After (the shared pacer already spaces everyone);
    otherwise (5xx without Retry-After, timeouts, resets) an exponential back-off with jitter."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff
        self._unpaced = 0  # the back-off grows with these failures only, not with 429s

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, Throttled):
            return 0.0
        if isinstance(exc, ServerError) and exc.retry_after is not None:
            return 0.0
        self._unpaced += 1
        counted = copy.copy(retry_state)
        counted.attempt_number = self._unpaced
        return float(self.backoff(counted))


def retry_policy(
    retry_for_seconds: float,
    *,
    sleep: Callable[[float], Awaitable[None]],
    initial_backoff: float = 1.0,
    max_backoff: float = 30.0,
) -> AsyncRetrying:
    """Retry transient answers until ``retry_for_seconds`` have passed, then re-raise."""
    return AsyncRetrying(
        retry=retry_if_exception_type(RETRYABLE),
        stop=stop_after_delay(retry_for_seconds),
        wait=wait_unless_paced(
            wait_exponential_jitter(multiplier=initial_backoff, max=max_backoff)
        ),
        sleep=sleep,
        reraise=True,
    )


def backoff(tries: int, initial: float, most: float) -> float:
    """Seconds to wait before the next try of one request inside a JSON batch (an inner 5xx or
    a lost answer): exponential from ``initial`` up to ``most``, with jitter, so that retries
    of many users do not come back all at once."""
    return float(min(most, initial * 2 ** (tries - 1)) * random.uniform(0.5, 1.0))
