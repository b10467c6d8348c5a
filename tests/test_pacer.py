"""Pacer: starts spaced at the rate, one shared back-off per 429 episode, Retry-After holds.

Time is a fake clock; the pacer's ``sleep`` records each wait and moves the clock forward by
it, so nothing here waits for real.
"""

from __future__ import annotations

import itertools

import anyio
import anyio.lowlevel
import pytest

from batcher.pacer import Limit, Pacer, Tuning

START = 1000.0


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
    return Pacer(rate, tuning=Tuning(**kwargs), clock=time.clock, sleep=time.sleep)


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
    pacer = make_pacer(time)
    assert await pacer.acquire() == START
    assert time.sleeps == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("rate", "margin", "gap"),
    [(1.0, 0.0, 1.0), (2.0, 0.0, 0.5), (1.0, 0.02, 1.02), (4.0, 0.02, 0.255)],
)
async def test_concurrent_acquirers_start_one_interval_apart(
    rate: float, margin: float, gap: float
) -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=rate, margin=margin)
    starts = await start_times(pacer, time, callers=5)
    assert offsets(starts, START) == [round(gap * k, 9) for k in range(5)]


@pytest.mark.anyio
async def test_idle_time_does_not_bank_a_burst() -> None:
    time = FakeTime()
    pacer = make_pacer(time, margin=0.0)
    await pacer.acquire()
    time.advance(30.0)  # a long quiet spell
    origin = time.now
    starts = await start_times(pacer, time, callers=3)
    assert offsets(starts, origin) == [0.0, 1.0, 2.0]


@pytest.mark.anyio
async def test_a_429_slows_every_caller_and_pushes_the_next_start() -> None:
    time = FakeTime()
    pacer = make_pacer(time, margin=0.0, slowdown=1.5)
    started = await pacer.acquire()
    time.advance(0.3)  # the 429 arrives 0.3 s later
    pacer.throttled(started)
    assert pacer.interval == 1.5
    origin = time.now
    starts = await start_times(pacer, time, callers=3)
    assert offsets(starts, origin) == [1.5, 3.0, 4.5]


@pytest.mark.anyio
async def test_a_volley_of_429s_from_requests_in_flight_slows_down_once() -> None:
    time = FakeTime()
    pacer = make_pacer(time, margin=0.0, slowdown=1.5)
    in_flight = [await pacer.acquire() for _ in range(4)]
    for started in in_flight:  # all four answered 429, one after the other
        time.advance(0.1)
        pacer.throttled(started)
    assert pacer.interval == 1.5
    assert (pacer.throttles, pacer.slowdowns) == (4, 1)


@pytest.mark.anyio
async def test_a_429_at_the_new_pace_slows_down_again_up_to_max_interval() -> None:
    time = FakeTime()
    pacer = make_pacer(time, margin=0.0, slowdown=2.0, max_interval=5.0)
    intervals = []
    for _ in range(4):
        started = await pacer.acquire()
        time.advance(0.01)
        pacer.throttled(started)
        intervals.append(pacer.interval)
    assert intervals == [2.0, 4.0, 5.0, 5.0]
    assert pacer.slowdowns == 4


def test_a_rate_slower_than_max_interval_is_never_sped_up() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=0.01, margin=0.0, max_interval=60.0)
    pacer.throttled()
    assert pacer.interval == 100.0


@pytest.mark.anyio
async def test_hold_stops_every_start_for_retry_after_seconds() -> None:
    time = FakeTime()
    pacer = make_pacer(time, margin=0.0)
    await pacer.acquire()
    pacer.hold(7.5)
    origin = time.now
    starts = await start_times(pacer, time, callers=2)
    assert offsets(starts, origin) == [7.5, 8.5]
    assert pacer.interval == 1.0  # a Retry-After is obeyed, not a reason to slow down


@pytest.mark.anyio
async def test_a_shorter_hold_does_not_pull_a_later_start_forward() -> None:
    time = FakeTime()
    pacer = make_pacer(time, margin=0.0)
    await pacer.acquire()
    pacer.hold(10.0)
    pacer.hold(2.0)
    origin = time.now
    assert offsets(await start_times(pacer, time, callers=1), origin) == [10.0]


def test_successes_win_back_the_target_rate_additively() -> None:
    time = FakeTime()
    pacer = make_pacer(time, margin=0.0, slowdown=2.0, recovery=0.1)
    pacer.throttled()
    assert pacer.rate == pytest.approx(0.5)
    rates = []
    for _ in range(6):
        pacer.succeeded()
        rates.append(round(pacer.rate, 9))
    assert rates == [0.6, 0.7, 0.8, 0.9, 1.0, 1.0]


def test_success_at_the_target_rate_never_goes_faster() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=2.0, margin=0.02)
    for _ in range(10):
        pacer.succeeded()
    assert pacer.interval == pytest.approx(0.51)


# -- cost: a JSON batch spends one unit of its budget per inner request ---------------------------
@pytest.mark.anyio
async def test_a_costly_request_pushes_the_next_start_by_its_cost() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=20.0, margin=0.0)
    assert await pacer.acquire(20) == START  # a full JSON batch goes at once...
    assert await pacer.acquire(5) == pytest.approx(START + 1.0)  # ...the next one second later
    assert await pacer.acquire() == pytest.approx(START + 1.25)
    assert time.sleeps == pytest.approx([1.0, 0.25])


@pytest.mark.anyio
async def test_concurrent_callers_are_spaced_by_what_each_one_spent() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=10.0, margin=0.0)
    started: list[tuple[float, float]] = []

    async def one(cost: float) -> None:
        started.append((await pacer.acquire(cost), cost))

    async with anyio.create_task_group() as tg:
        for cost in (3.0, 1.0, 2.0, 1.0, 4.0):
            tg.start_soon(one, cost)
    started.sort()
    assert started[0] == (START, 3.0)
    for (before, cost), (after, _) in itertools.pairwise(started):
        assert after - before == pytest.approx(0.1 * cost)  # whoever went, its cost spaced it


@pytest.mark.anyio
async def test_cost_is_spent_at_the_slowed_pace_after_a_429() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=10.0, margin=0.0, slowdown=2.0)
    started = await pacer.acquire(4)
    pacer.throttled(started)  # interval 0.1 -> 0.2; next start one interval from now at least
    assert pacer.interval == pytest.approx(0.2)
    assert await pacer.acquire(4) == pytest.approx(START + 0.4)  # the first cost, at 0.1 each
    assert await pacer.acquire() == pytest.approx(START + 0.4 + 0.8)  # 4 at 0.2 each


@pytest.mark.anyio
async def test_a_cost_below_one_lets_the_next_start_sooner() -> None:
    time = FakeTime()
    pacer = make_pacer(time, rate=1.0, margin=0.0)
    await pacer.acquire(0.5)
    assert await pacer.acquire() == pytest.approx(START + 0.5)


@pytest.mark.anyio
async def test_a_request_that_leaves_late_pushes_the_next_start_a_whole_interval() -> None:
    """The intent commit took 0.3 s after the grant: the next request may not leave less than
    one interval after this one actually did."""
    time = FakeTime()
    pacer = make_pacer(time, margin=0.0)
    first = await pacer.acquire()
    time.advance(0.3)  # the ledger commit before the request leaves
    pacer.departed()
    second = await pacer.acquire()
    assert round(second - (first + 0.3), 9) == 1.0


# -- windows: Graph's "N per T seconds" (GCRA: up to N at once, then N/T a second) ------------
def make_window(time: FakeTime, *limits: Limit, **kwargs: float) -> Pacer:
    return Pacer(limits, tuning=Tuning(**kwargs), clock=time.clock, sleep=time.sleep)


@pytest.mark.anyio
async def test_a_window_lets_its_size_go_at_once_then_refills_at_its_rate() -> None:
    time = FakeTime()
    pacer = make_window(time, Limit(3000, 150.0), reserve=0.0, margin=0.0)
    for _ in range(150):  # 3,000 writes in JSON batches of 20
        assert await pacer.acquire(20) == START
    assert time.sleeps == []
    assert await pacer.acquire(20) == pytest.approx(START + 1.0)  # 20 more at 20 a second
    assert await pacer.acquire(20) == pytest.approx(START + 2.0)


@pytest.mark.anyio
async def test_a_window_keeps_its_reserve_against_network_jitter() -> None:
    time = FakeTime()
    pacer = make_window(time, Limit(3000, 150.0))  # 1% kept back: 2,970 at once
    spent = 0
    while await pacer.acquire(10) == START:
        spent += 10
    assert spent == 2970


@pytest.mark.anyio
async def test_the_tighter_of_two_windows_decides() -> None:
    time = FakeTime()
    # 3,000 per 150 s per app, and a tenant-wide 100 per 10 s left to us
    pacer = make_window(time, Limit(3000, 150.0), Limit(100, 10.0), reserve=0.0, margin=0.0)
    for _ in range(5):
        assert await pacer.acquire(20) == START
    assert await pacer.acquire(20) == pytest.approx(START + 2.0)  # the tenant's 10 a second


@pytest.mark.anyio
async def test_a_429_counts_the_window_as_spent_and_retry_after_holds_it() -> None:
    time = FakeTime()
    pacer = make_window(time, Limit(3000, 150.0), reserve=0.0, margin=0.0, slowdown=1.0)
    started = await pacer.acquire(20)
    pacer.throttled(started)  # Graph's window is spent (another app took it)
    pacer.hold(5.0)  # its Retry-After
    starts = [await pacer.acquire(20) for _ in range(6)]
    # what refilled during the hold (5 s x 20 = 100), then 20 a second: no burst of 3,000
    assert starts == pytest.approx([START + 5.0] * 5 + [START + 6.0])
    assert pacer.throttles == 1


def test_a_window_seconds_for_goes_at_once_then_at_its_rate() -> None:
    window = Limit(3000, 150.0)
    assert window.seconds_for(1200) == 0.0
    assert window.seconds_for(4000) == pytest.approx(50.0)
    assert Limit.steady(1.0).seconds_for(20) == pytest.approx(19.0)  # no burst: one a second
