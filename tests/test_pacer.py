"""Pacer: request starts spaced at 1/rate, one shared back-off on 429, Retry-After holds.

Time is a fake clock; the pacer's ``sleep`` records each wait and moves the clock forward by
it, so nothing here waits for real.
"""

from __future__ import annotations

import itertools

import anyio
import anyio.lowlevel
import pytest

from batcher.pacer import Pacer

START = 1000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeTime:
    """A clock that only moves when a pacer sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the pacer asked to sleep for nothing"
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()  # let the other acquirers run, as a real sleep does

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_pacer(time: FakeTime, rate: float = 1.0, **kwargs: float) -> Pacer:
    return Pacer(rate, clock=time.clock, sleep=time.sleep, **kwargs)


async def start_times(pacer: Pacer, time: FakeTime, callers: int) -> list[float]:
    """Let ``callers`` tasks acquire at once; return when each got its start slot."""
    starts: list[float] = []

    async def one() -> None:
        await pacer.acquire()
        starts.append(time.now)

    async with anyio.create_task_group() as tg:
        for _ in range(callers):
            tg.start_soon(one)
    return starts


def offsets(starts: list[float], origin: float) -> list[float]:
    return [round(t - origin, 9) for t in starts]


@pytest.mark.anyio
async def test_first_start_is_immediate() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=1.0)
    await pacer.acquire()
    assert time.now == START
    assert time.sleeps == []


@pytest.mark.anyio
@pytest.mark.parametrize(("rate", "interval"), [(1.0, 1.0), (2.0, 0.5), (4.0, 0.25)])
async def test_concurrent_acquirers_start_one_interval_apart(rate: float, interval: float) -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=rate)
    starts = await start_times(pacer, time, callers=6)
    assert offsets(starts, START) == [round(i * interval, 9) for i in range(6)]


@pytest.mark.anyio
async def test_idle_time_does_not_bank_a_burst() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=1.0)
    await pacer.acquire()
    time.advance(30.0)  # nobody asked for a while
    origin = time.now
    starts = await start_times(pacer, time, callers=3)
    assert offsets(starts, origin) == [0.0, 1.0, 2.0]


@pytest.mark.anyio
async def test_throttled_doubles_the_spacing_for_every_caller() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=1.0)
    await pacer.acquire()  # one request went out at START ...
    pacer.throttled()  # ... and came back 429
    assert pacer.interval == 2.0
    assert pacer.throttles == 1

    # Other workers, not the one that saw the 429, wait the doubled interval too.
    starts = await start_times(pacer, time, callers=3)
    assert offsets(starts, START) == [2.0, 4.0, 6.0]


@pytest.mark.anyio
async def test_throttled_pushes_the_next_start_out_from_now() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=1.0)
    await pacer.acquire()
    time.advance(5.0)  # the 429 arrives five seconds after the request started
    pacer.throttled()
    await pacer.acquire()
    assert time.now == START + 5.0 + 2.0


@pytest.mark.anyio
async def test_repeated_throttles_double_each_time_up_to_max_interval() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=1.0, max_interval=10.0)
    seen = []
    for _ in range(6):
        pacer.throttled()
        seen.append(pacer.interval)
    assert seen == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert pacer.throttles == 6

    origin = time.now
    starts = await start_times(pacer, time, callers=3)
    assert offsets(starts, origin) == [10.0, 20.0, 30.0]


def test_throttled_never_speeds_up_a_rate_slower_than_max_interval() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=0.01, max_interval=60.0)  # one start per 100 s
    pacer.throttled()
    assert pacer.interval == 100.0


@pytest.mark.anyio
async def test_hold_stops_every_start_for_retry_after_seconds() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=1.0)
    await pacer.acquire()
    pacer.hold(7.5)
    starts = await start_times(pacer, time, callers=3)
    # Nobody starts during the hold; after it, the usual spacing, which hold did not change.
    assert offsets(starts, START) == [7.5, 8.5, 9.5]
    assert pacer.interval == 1.0
    assert pacer.throttles == 0


@pytest.mark.anyio
async def test_a_shorter_hold_does_not_pull_a_later_start_forward() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=1.0)
    await pacer.acquire()
    pacer.throttled()
    pacer.throttled()  # next start at START + 4
    pacer.hold(1.0)
    await pacer.acquire()
    assert time.now == START + 4.0


@pytest.mark.anyio
async def test_succeeded_recovers_gradually_to_the_base_rate() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=1.0, recovery=0.5)
    for _ in range(3):
        pacer.throttled()
    assert pacer.interval == 8.0

    seen = []
    for _ in range(5):
        pacer.succeeded()
        seen.append(pacer.interval)
    assert seen == [4.0, 2.0, 1.0, 1.0, 1.0]  # step by step, then never faster than the rate


def test_succeeded_with_the_default_recovery_takes_several_successes() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=2.0)
    pacer.throttled()
    pacer.throttled()
    assert pacer.interval == 2.0

    seen = []
    while pacer.interval > pacer.base_interval:
        pacer.succeeded()
        seen.append(pacer.interval)
    assert len(seen) > 3
    assert seen[-1] == 0.5
    assert all(b < a for a, b in itertools.pairwise(seen))


@pytest.mark.anyio
async def test_succeeded_at_the_base_rate_does_not_go_faster() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=1.0)
    for _ in range(10):
        pacer.succeeded()
    assert pacer.interval == 1.0
    starts = await start_times(pacer, time, callers=3)
    assert offsets(starts, START) == [0.0, 1.0, 2.0]
