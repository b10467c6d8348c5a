"""retry_policy: what is retried, how long it waits between tries, and when it gives up.

The policy's ``sleep`` only records what it was asked to wait, so nothing here waits for real.
"""

from __future__ import annotations

import time
import warnings

import pytest

from batcher.errors import (
    AuthError,
    BadRequest,
    Forbidden,
    GraphError,
    NoAnswer,
    NotConnected,
    NotFound,
    Rejected,
    ServerError,
    Throttled,
    Unauthorized,
)
from batcher.retries import RETRYABLE, retry_policy


class RecordingSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(float(seconds))


class Attempts:
    """Raises the scripted errors in order, then succeeds; counts the tries."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.tries = 0

    async def __call__(self) -> str:
        self.tries += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


async def run(
    attempts: Attempts, sleep: RecordingSleep, retry_for: float = 600.0, **kw: float
) -> str:
    result = ""
    async for attempt in retry_policy(retry_for, sleep=sleep, **kw):
        with attempt:
            result = await attempts()
    return result


def server_error(retry_after: float | None = None) -> ServerError:
    return ServerError("HTTP 503", status=503, retry_after=retry_after)


TRANSIENT = [
    Throttled("HTTP 429", status=429),
    ServerError("HTTP 500", status=500),
    ServerError("HTTP 503", status=503, retry_after=2.0),
    NoAnswer("no answer in time (ReadTimeout)"),
    NotConnected("the connection was refused"),  # the breaker, not the retry, stops those
]
PERMANENT = [
    BadRequest("HTTP 400", status=400),
    # A 401 is the bearer flow's: it signs in afresh once and sends again, then stops the run.
    Unauthorized("HTTP 401", status=401),
    AuthError("Graph refused the token twice"),
    Forbidden("HTTP 403", status=403),
    NotFound("HTTP 404", status=404),
    Rejected("HTTP 409", status=409),
    GraphError("some other Graph error"),
    ValueError("a bug, not an answer"),
]


def test_the_retryable_set_is_exactly_the_transient_answers() -> None:
    assert set(RETRYABLE) == {Throttled, ServerError, NoAnswer}


@pytest.mark.anyio
@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
async def test_transient_answers_are_tried_again(error: GraphError) -> None:
    attempts, sleep = Attempts(error, error), RecordingSleep()
    assert await run(attempts, sleep) == "done"
    assert attempts.tries == 3
    assert len(sleep.waits) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: type(e).__name__)
async def test_permanent_answers_are_raised_at_once(error: Exception) -> None:
    attempts, sleep = Attempts(error), RecordingSleep()
    with pytest.raises(type(error)) as raised:
        await run(attempts, sleep)
    assert raised.value is error
    assert attempts.tries == 1
    assert sleep.waits == []


@pytest.mark.anyio
async def test_success_first_time_does_not_wait() -> None:
    attempts, sleep = Attempts(), RecordingSleep()
    assert await run(attempts, sleep) == "done"
    assert attempts.tries == 1
    assert sleep.waits == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "error",
    [
        Throttled("HTTP 429", status=429),
        server_error(retry_after=30.0),
        server_error(retry_after=0.0),  # "Retry-After: 0" is still a Retry-After
        Throttled("HTTP 429", status=429, retry_after=5.0),
    ],
    ids=["throttled", "retry-after", "retry-after-0", "throttled-retry-after"],
)
async def test_no_extra_wait_when_the_pacer_already_spaces_the_retry(error: GraphError) -> None:
    attempts, sleep = Attempts(error, error, error, error), RecordingSleep()
    assert await run(attempts, sleep) == "done"
    assert sleep.waits == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "error",
    [
        server_error(),
        ServerError("HTTP 500", status=500),
        NoAnswer("connection broke"),
        NotConnected("connection refused"),
    ],
    ids=["503-no-retry-after", "500", "no-answer", "not-connected"],
)
async def test_other_transient_answers_back_off_exponentially(error: GraphError) -> None:
    attempts, sleep = Attempts(*[error] * 5), RecordingSleep()
    assert await run(attempts, sleep, initial_backoff=1.0, max_backoff=100.0) == "done"
    assert len(sleep.waits) == 5
    for n, wait in enumerate(sleep.waits):
        # 1, 2, 4, 8, 16 seconds, plus up to one second of jitter
        assert 2.0**n <= wait <= 2.0**n + 1.0, sleep.waits


@pytest.mark.anyio
async def test_backoff_scales_with_initial_backoff_and_is_capped() -> None:
    attempts, sleep = Attempts(*[server_error()] * 6), RecordingSleep()
    assert await run(attempts, sleep, initial_backoff=2.0, max_backoff=9.0) == "done"
    assert 2.0 <= sleep.waits[0] <= 3.0
    assert 4.0 <= sleep.waits[1] <= 5.0
    assert 8.0 <= sleep.waits[2] <= 9.0
    assert sleep.waits[3:] == [9.0, 9.0, 9.0]


@pytest.mark.anyio
async def test_only_unpaced_failures_grow_the_back_off() -> None:
    throttled = Throttled("HTTP 429", status=429)
    attempts = Attempts(server_error(), throttled, throttled, server_error(), server_error())
    sleep = RecordingSleep()
    assert await run(attempts, sleep, initial_backoff=1.0, max_backoff=100.0) == "done"
    first, t1, t2, second, third = sleep.waits
    assert (t1, t2) == (0.0, 0.0)
    assert 1.0 <= first <= 2.0
    assert 2.0 <= second <= 3.0  # the second back-off, not the fourth: 429s did not count
    assert 4.0 <= third <= 5.0


@pytest.mark.anyio
async def test_a_permanent_answer_after_transient_ones_is_raised_at_once() -> None:
    refused = BadRequest("HTTP 400", status=400)
    attempts, sleep = Attempts(server_error(), refused), RecordingSleep()
    with pytest.raises(BadRequest) as raised:
        await run(attempts, sleep)
    assert raised.value is refused
    assert attempts.tries == 2
    assert len(sleep.waits) == 1


@pytest.mark.anyio
async def test_zero_retry_time_reraises_the_first_transient_error_itself() -> None:
    error = server_error()
    attempts, sleep = Attempts(error, error), RecordingSleep()
    with pytest.raises(ServerError) as raised:
        await run(attempts, sleep, retry_for=0.0)
    assert raised.value is error  # the answer itself, not tenacity's RetryError
    assert attempts.tries == 1
    assert sleep.waits == []


class AlwaysThrottled:
    """A fresh 429 on every try, numbered, so the test can tell which one was re-raised."""

    def __init__(self) -> None:
        self.raised: list[Throttled] = []

    async def __call__(self) -> str:
        error = Throttled(f"HTTP 429 #{len(self.raised) + 1}", status=429)
        self.raised.append(error)
        raise error


@pytest.mark.anyio
async def test_gives_up_after_retry_for_seconds_with_the_last_error() -> None:
    # tenacity measures the retry time on its own monotonic clock (no way to inject one), so
    # this test uses a tiny real budget; the recording sleep never waits.
    retry_for = 0.05
    attempts, sleep = AlwaysThrottled(), RecordingSleep()
    began = time.monotonic()
    with pytest.raises(Throttled) as raised:
        async for attempt in retry_policy(retry_for, sleep=sleep):
            with attempt:
                await attempts()
    elapsed = time.monotonic() - began
    assert elapsed >= retry_for
    assert elapsed < 5.0
    assert len(attempts.raised) > 1
    assert raised.value is attempts.raised[-1]
    assert len(sleep.waits) == len(attempts.raised) - 1


def test_a_custom_initial_backoff_uses_no_deprecated_tenacity_argument() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retry_policy(60.0, sleep=RecordingSleep(), initial_backoff=0.5, max_backoff=5.0)
