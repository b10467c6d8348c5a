"""One paced Graph call: stop and breaker (Control), the CLI's stop (StopSignal), the Caller's
order (pacer, stop check, intent, send, answer, feedback, retries) and the run's tally.

Pacers run on a fake clock whose sleeps are recorded; tenacity's waits are recorded too. Graph
is the in-process simulator, or a scripted transport for held, odd or refused answers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import polars as pl
import pytest

from batcher.actions import ACTIONS, Budget
from batcher.auth import StaticToken
from batcher.calls import Call, Caller, NotSent, RetrySettings, StopSignal
from batcher.control import UNREACHABLE_AFTER, WINDOW, Control, Tally
from batcher.errors import (
    AuthError,
    Forbidden,
    GraphError,
    NoAnswer,
    NotConnected,
    ServerError,
    Throttled,
    Unreachable,
)
from batcher.graph import Accepted, GraphClient, http_client
from batcher.ledger import Answer, Ledger, Outcome, RunScope, StepState
from batcher.pacer import Pacer, Tuning
from batcher.simulator import GraphSimulator
from tests.helpers import FAST, GRAPH, TEST_TOKEN, Events, ids

CONFIRM = ACTIONS["confirm"]
IDENTITY = RunScope(actions=("confirm",), tenant="tenant-a", cloud="global", api_version="v1.0")


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to a closed loopback port must meet that port, not a proxy from the CI's env."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


# -- parts ---------------------------------------------------------------------------------------
class FakeTime:
    """The pacers' clock: it moves only when a pacer sleeps (or a scripted answer takes time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 9))
        self.now += seconds
        await anyio.lowlevel.checkpoint()


class RecordingSleep:
    """tenacity's sleep: records each wait, waits for nothing."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(float(seconds))
        await anyio.lowlevel.checkpoint()


RATES = {
    Budget.IDENTITY_PROTECTION: 1.0,
    Budget.DIRECTORY_WRITES: 20.0,
    Budget.DIRECTORY_READS: 300.0,
}


def make_caller(
    control: Control, clock: FakeTime, *, retry_for: float = 30.0
) -> tuple[Caller, RecordingSleep]:
    pacers = {
        budget: Pacer(rate, tuning=Tuning(margin=0.0), clock=clock.clock, sleep=clock.sleep)
        for budget, rate in RATES.items()
    }
    waits = RecordingSleep()
    return Caller(pacers, RetrySettings(retry_for, (0.5, 4.0), waits), control), waits


def graph_error(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": f"{code} said Graph"}}


@dataclass
class Scripted(httpx.AsyncBaseTransport):
    """Graph by script: answers in order (204 once the script is done). The first ``hold``
    requests wait until ``release`` is set (``arrived`` is set once they are all in), and each
    answer takes ``latency`` seconds of the fake clock."""

    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hold: int = 0
    clock: FakeTime | None = None
    latency: float = 0.0
    requests: list[httpx.Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.arrived = anyio.Event()
        self.release = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        n = len(self.requests)
        if n <= self.hold:
            if n == self.hold:
                self.arrived.set()
            await self.release.wait()
        if self.clock is not None:
            self.clock.now += self.latency
        status, headers = self.answers.pop(0) if self.answers else (204, {})
        body = graph_error("TooManyRequests" if status == 429 else f"e{status}")
        return httpx.Response(
            status,
            headers={"request-id": f"rid-{n}", **headers},
            json=body if status >= 400 else None,
        )


def script(*answers: int | tuple[int, dict[str, str]], **kw: Any) -> Scripted:
    return Scripted([(a, {}) if isinstance(a, int) else a for a in answers], **kw)


@asynccontextmanager
async def graph(
    transport: httpx.AsyncBaseTransport | None, base_url: str = GRAPH
) -> AsyncIterator[GraphClient]:
    async with http_client(StaticToken(TEST_TOKEN), timeout=5.0, transport=transport) as http:
        yield GraphClient(http, base_url, "v1.0")


@dataclass
class Hooks:
    """A call's ledger hooks on a real ledger: the intent as a batch, the answer on it."""

    ledger: Ledger | None = None
    user_ids: list[str] = field(default_factory=list)
    intents: list[str] = field(default_factory=list)
    answers: list[tuple[Answer, GraphError | None]] = field(default_factory=list)
    batch_id: int | None = None
    attempt_id: int = 0

    def before(self, crid: str) -> None:
        self.intents.append(crid)
        if self.ledger is None:
            return
        if self.batch_id is None:
            keys = [(uid, "confirm") for uid in self.user_ids]
            self.batch_id, self.attempt_id = self.ledger.start_batch("confirm", keys, crid)
        else:
            self.attempt_id = self.ledger.start_attempt(self.batch_id, crid)

    def after(self, answer: Answer, exc: GraphError | None) -> None:
        self.answers.append((answer, exc))
        if self.ledger is not None and self.batch_id is not None:
            settle = StepState.DONE if exc is None else None
            self.ledger.finish_attempt(self.batch_id, self.attempt_id, answer, settle)


def confirm(
    client: GraphClient, user_ids: list[str], hooks: Hooks | None = None, **kw: Any
) -> Call[Accepted]:
    hooks = hooks or Hooks()
    return Call(
        Budget.IDENTITY_PROTECTION,
        send=lambda crid: client.post_ids(CONFIRM, user_ids, crid),
        permission=CONFIRM.permission,
        before=hooks.before,
        after=hooks.after,
        **kw,
    )


def new_ledger(path: Path, user_ids: list[str]) -> Ledger:
    ledger = Ledger.open(path, IDENTITY)
    ledger.add_users(pl.DataFrame({"user_id": user_ids}, schema={"user_id": pl.String}))
    ledger.add_steps("confirm", pl.Series(user_ids))
    return ledger


def states(path: Path) -> dict[str, str]:
    reader = Ledger.open_existing(path)
    try:
        known = reader.known_steps()
    finally:
        reader.close()
    return dict(zip(known["user_id"], known["state"], strict=True))


# -- stopping ------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_a_stop_with_nothing_in_flight_cancels_at_once() -> None:
    events = Events()
    control = Control(grace=30.0, observer=events)
    with anyio.fail_after(10):
        with control.scope():
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(anyio.sleep_forever)
                await anyio.lowlevel.checkpoint()
                control.stop()
                await anyio.sleep_forever()
    assert control.stops.asked
    assert events.named("stopping") == [{"first": True, "in_flight": 0, "grace": 30.0}]


@pytest.mark.anyio
async def test_a_stop_lets_requests_in_flight_finish_within_the_grace() -> None:
    held = script(hold=1)
    control, clock = Control(grace=30.0), FakeTime()
    caller, _ = make_caller(control, clock)
    results: list[Accepted] = []
    async with graph(held) as client:
        with anyio.fail_after(60), control.scope():
            async with anyio.create_task_group() as tasks:

                async def one() -> None:
                    results.append(await caller(confirm(client, ids(2))))

                tasks.start_soon(one)
                await held.arrived.wait()
                assert control.flight.count == 1
                control.stop()
                # The deadline is the grace from now, not now:
                deadline = anyio.current_effective_deadline() - anyio.current_time()
                assert 29.0 < deadline <= 30.0
                with pytest.raises(NotSent):  # no new request starts
                    await caller(confirm(client, ids(1, seed=2)))
                held.release.set()
    assert [r.status for r in results] == [204]
    assert len(held.requests) == 1
    assert control.flight.count == 0


@pytest.mark.anyio
async def test_a_request_still_in_flight_when_the_grace_ends_is_cut_off_and_left_unknown(
    tmp_path: Path,
) -> None:
    users = ids(3)
    ledger = new_ledger(tmp_path / "l.sqlite", users)
    hooks = Hooks(ledger, users[:2])
    held = script(hold=1)  # never answers
    control = Control(grace=0.05)
    caller, _ = make_caller(control, FakeTime())
    began = time.monotonic()
    async with graph(held) as client:
        with anyio.fail_after(10), control.scope():
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(caller, confirm(client, users[:2], hooks))
                await held.arrived.wait()
                control.stop()
    assert time.monotonic() - began >= 0.05
    assert control.flight.count == 0
    assert len(hooks.intents) == 1 and hooks.answers == []  # cut off: no answer to record
    ledger.close()
    path = tmp_path / "l.sqlite"
    assert states(path) == {users[0]: "unknown", users[1]: "unknown", users[2]: "planned"}


@pytest.mark.anyio
async def test_a_second_stop_cancels_requests_in_flight_now() -> None:
    events = Events()
    held = script(hold=1)
    control = Control(grace=30.0, observer=events)
    caller, _ = make_caller(control, FakeTime())
    async with graph(held) as client:
        with anyio.fail_after(10), control.scope():
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(caller, confirm(client, ids(1)))
                await held.arrived.wait()
                control.stop()
                control.stop()
                await anyio.sleep_forever()
    assert control.flight.count == 0
    assert events.named("stopping") == [
        {"first": True, "in_flight": 1, "grace": 30.0},
        {"first": False, "in_flight": 1, "grace": 30.0},
    ]


@pytest.mark.anyio
async def test_a_stop_or_trip_before_the_run_cancels_it_as_it_starts() -> None:
    stopped = Control()
    stopped.stop()  # before any scope: only noted
    assert stopped.stops.asked
    with anyio.fail_after(10), stopped.scope():
        await anyio.sleep_forever()

    tripped = Control()
    tripped.breaker.trip(AuthError("no permission"))
    with anyio.fail_after(10), tripped.scope():
        await anyio.sleep_forever()


@pytest.mark.anyio
async def test_trip_cancels_everything_and_keeps_the_first_reason() -> None:
    control = Control()
    first, second = AuthError("first"), Unreachable("second")
    with anyio.fail_after(10), control.scope():
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(anyio.sleep_forever)
            await anyio.lowlevel.checkpoint()
            control.breaker.trip(first)
            control.breaker.trip(second)
            await anyio.sleep_forever()
    assert control.breaker.tripped is first
    assert not control.stops.asked


# -- the CLI's stop ------------------------------------------------------------------------------
def test_a_stop_signal_outside_a_send_is_a_keyboard_interrupt() -> None:
    stop = StopSignal()
    with pytest.raises(KeyboardInterrupt):
        stop.ask()
    assert stop.asked == 1


@pytest.mark.anyio
async def test_a_stop_signal_during_a_send_reaches_the_control() -> None:
    stop, events, second = StopSignal(), Events(), anyio.Event()

    def observer(event: str, **fields: Any) -> None:
        events(event, **fields)
        if event == "stopping" and not fields["first"]:
            second.set()

    control = Control(observer=observer)
    with stop.attached(control):
        stop.ask()  # from the event loop's own thread, as a signal handler runs
        await anyio.lowlevel.checkpoint()
        assert control.stops.asked
        await anyio.to_thread.run_sync(stop.ask)  # from another thread (Windows' console)
        with anyio.fail_after(5):
            await second.wait()
    assert stop.asked == 2
    assert [e["first"] for e in events.named("stopping")] == [True, False]
    with pytest.raises(KeyboardInterrupt):  # detached again once the send is over
        stop.ask()


# -- reachability --------------------------------------------------------------------------------
def refused(host: str = "graph.microsoft.com") -> NotConnected:
    return NotConnected("no answer", cause="the connection was refused", host=host)


def test_unreachable_graph_trips_the_breaker_after_the_threshold_by_the_injected_clock() -> None:
    events, clock = Events(), FakeTime()
    control = Control(observer=events, unreachable_after=30.0, clock=clock.clock)
    control.reach.reached(refused())
    clock.now += 29.9
    control.reach.reached(refused())
    assert control.breaker.tripped is None  # 29.9 s by the run's clock: not yet
    clock.now += 0.1
    control.reach.reached(refused())
    assert isinstance(control.breaker.tripped, Unreachable)
    assert "for 30s" in str(control.breaker.tripped)
    assert [e["stop_after"] for e in events.named("unreachable")] == [30.0]


def test_graph_never_reached_stops_the_run_after_the_threshold_said_once() -> None:
    events = Events()
    control = Control(observer=events)
    assert control.reach.after == UNREACHABLE_AFTER == 30.0
    control.reach.after = 3600.0
    for _ in range(3):
        control.reach.reached(refused())
    assert control.breaker.tripped is None
    [said] = events.named("unreachable")  # said once, at the first failure
    assert said["host"] == "graph.microsoft.com"
    assert said["cause"] == "the connection was refused"
    assert "HTTPS_PROXY" in said["advice"]

    control.reach.after = 0.0  # the threshold has passed
    control.reach.reached(refused())
    assert isinstance(control.breaker.tripped, Unreachable)
    message = str(control.breaker.tripped)
    assert "cannot reach graph.microsoft.com for 0s: the connection was refused" in message
    assert "the same command resumes" in message
    assert len(events.named("unreachable")) == 1


def test_an_untrusted_certificate_stops_the_run_at_once() -> None:
    events = Events()
    control = Control(observer=events)
    control.reach.reached(
        NotConnected("x", cause="its TLS certificate is not trusted", host="g.test")
    )
    assert isinstance(control.breaker.tripped, Unreachable)
    assert "cannot reach g.test: its TLS certificate is not trusted" in str(control.breaker.tripped)
    assert "ca_bundle" in str(control.breaker.tripped)
    assert "ca_bundle" in events.named("unreachable")[0]["advice"]


def test_dns_advice_names_the_host_setting() -> None:
    events = Events()
    Control(observer=events).reach.reached(
        NotConnected("x", cause="the name does not resolve (DNS)", host="g.invalid")
    )
    assert "DNS" in events.named("unreachable")[0]["advice"]


@pytest.mark.parametrize(
    "earlier",
    [None, Throttled("429", status=429), ServerError("503", status=503), NoAnswer("lost")],
    ids=["accepted", "429", "503", "lost"],
)
def test_graph_lost_in_the_middle_of_a_run_stops_it_too(earlier: GraphError | None) -> None:
    """Answers before do not excuse a Graph that can no longer be reached: the run stops once
    no connection could be made for the threshold (zero here) since the last answer."""
    events = Events()
    control = Control(observer=events, unreachable_after=0.0)
    control.reach.reached(earlier)
    control.reach.reached(refused())
    assert control.reach.answered
    assert isinstance(control.breaker.tripped, Unreachable)
    assert [e["cause"] for e in events.named("unreachable")] == ["the connection was refused"]


def test_an_answer_between_two_failures_to_connect_starts_the_wait_again() -> None:
    events = Events()
    control = Control(observer=events, unreachable_after=1000.0)
    control.reach.reached(refused())
    control.reach.reached(None)  # Graph answered: it is reachable again
    control.reach.reached(refused())
    assert control.breaker.tripped is None
    assert len(events.named("unreachable")) == 2  # said again after the new silence
    assert events.named("unreachable")[0]["stop_after"] == 1000.0


@pytest.mark.anyio
async def test_the_caller_stops_sending_once_graph_is_unreachable(tmp_path: Path) -> None:
    users = ids(2)
    ledger = new_ledger(tmp_path / "l.sqlite", users)
    hooks = Hooks(ledger, users)
    control = Control(unreachable_after=0.0)
    caller, waits = make_caller(control, FakeTime())
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        async with graph(None, f"http://127.0.0.1:{closed.getsockname()[1]}") as client:
            with pytest.raises(NotSent):
                await caller(confirm(client, users, hooks))
    assert isinstance(control.breaker.tripped, Unreachable)
    assert "127.0.0.1" in str(control.breaker.tripped)
    assert [a.outcome for a, _ in hooks.answers] == [Outcome.NOT_CONNECTED]
    assert len(hooks.intents) == 1  # the retry found the breaker tripped: nothing more left
    assert len(waits.waits) == 1
    assert hooks.batch_id is not None
    assert ledger.release_batch(hooks.batch_id) == 0  # the request never left: planned again
    ledger.close()
    assert set(states(tmp_path / "l.sqlite").values()) == {"planned"}


# -- the caller ----------------------------------------------------------------------------------
class Watching(httpx.AsyncBaseTransport):
    """The simulator's transport, with a look at the ledger (from another connection) as each
    request leaves."""

    def __init__(self, sim: GraphSimulator, ledger: Path) -> None:
        self.inner = sim.transport()
        self.ledger = ledger
        self.seen: list[tuple[str, set[tuple[str, str]]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        reader = Ledger.open_existing(self.ledger)
        try:
            rows = reader.report()
        finally:
            reader.close()
        on_disk = {(r["state"], r["client_request_id"] or "") for r in rows.iter_rows(named=True)}
        self.seen.append((request.headers["client-request-id"], on_disk))
        return await self.inner.handle_async_request(request)


@pytest.mark.anyio
async def test_the_intent_is_on_disk_before_the_request_leaves(tmp_path: Path) -> None:
    users = ids(3)
    path = tmp_path / "l.sqlite"
    ledger = new_ledger(path, users)
    sim = GraphSimulator(FAST, tokens={TEST_TOKEN})
    watching = Watching(sim, path)
    hooks = Hooks(ledger, users[:2])
    caller, _ = make_caller(Control(), FakeTime())
    async with graph(watching) as client:
        result = await caller(confirm(client, users[:2], hooks))
    [(crid, on_disk)] = watching.seen
    assert hooks.intents == [crid]
    # a reader saw the two steps in flight under this request's id, and the third untouched
    assert on_disk == {("unknown", crid), ("planned", "")}
    assert result.client_request_id == crid
    assert sim.record.accepted["confirmCompromised"] == users[:2]
    ledger.close()
    assert states(path) == {users[0]: "done", users[1]: "done", users[2]: "planned"}


@pytest.mark.anyio
async def test_a_stop_before_the_turn_comes_sends_and_records_nothing(tmp_path: Path) -> None:
    users = ids(2)
    ledger = new_ledger(tmp_path / "l.sqlite", users)
    hooks = Hooks(ledger, users)
    graph_seen = script()
    control = Control()
    caller, _ = make_caller(control, FakeTime())
    control.stop()
    async with graph(graph_seen) as client:
        with pytest.raises(NotSent):
            await caller(confirm(client, users, hooks))
    assert hooks.intents == [] and hooks.answers == []
    assert graph_seen.requests == []
    assert control.tally.requests == 0
    ledger.close()
    assert set(states(tmp_path / "l.sqlite").values()) == {"planned"}


@pytest.mark.anyio
async def test_a_stop_while_waiting_for_the_pacer_sends_nothing_more() -> None:
    clock = FakeTime()
    control = Control()
    caller, _ = make_caller(control, clock)
    real_sleep = clock.sleep

    async def stop_while_waiting(seconds: float) -> None:
        control.stop()  # Ctrl-C while this request waits for its turn
        await real_sleep(seconds)

    for pacer in caller.pacers.values():
        pacer._sleep = stop_while_waiting
    first, second = Hooks(), Hooks()
    graph_seen = script()
    async with graph(graph_seen) as client:
        await caller(confirm(client, ids(1), first))
        with pytest.raises(NotSent):
            await caller(confirm(client, ids(1, seed=2), second))
    assert len(graph_seen.requests) == 1
    assert (len(first.intents), second.intents) == (1, [])
    assert clock.sleeps == [1.0]  # it waited for its turn, then found the stop


@pytest.mark.anyio
async def test_transient_answers_are_tried_again_each_with_its_own_intent() -> None:
    answers = script(503, (503, {}), 204)
    hooks, events = Hooks(), Events()
    control = Control(observer=events)
    caller, waits = make_caller(control, FakeTime())
    async with graph(answers) as client:
        result = await caller(confirm(client, ids(2), hooks))
    assert result.status == 204
    assert len(hooks.intents) == 3 and len(set(hooks.intents)) == 3
    assert [r.headers["client-request-id"] for r in answers.requests] == hooks.intents
    assert [a.outcome for a, _ in hooks.answers] == [
        Outcome.SERVER_ERROR,
        Outcome.SERVER_ERROR,
        Outcome.ACCEPTED,
    ]
    assert isinstance(hooks.answers[0][1], ServerError) and hooks.answers[2][1] is None
    assert len(waits.waits) == 2 and all(w > 0 for w in waits.waits)  # backed off
    assert control.tally.requests == 3
    assert [e["outcome"] for e in events.named("request")] == [
        "server_error",
        "server_error",
        "accepted",
    ]


@pytest.mark.anyio
async def test_out_of_retry_time_the_last_answer_is_raised() -> None:
    answers = script(503, 503)
    hooks = Hooks()
    caller, waits = make_caller(Control(), FakeTime(), retry_for=0.0)
    async with graph(answers) as client:
        with pytest.raises(ServerError):
            await caller(confirm(client, ids(1), hooks))
    assert len(answers.requests) == 1 and waits.waits == []
    assert len(hooks.answers) == 1


@pytest.mark.anyio
async def test_a_volley_of_429s_slows_the_pace_once() -> None:
    clock = FakeTime()
    volley = script(429, 429, 429, hold=3, clock=clock, latency=0.05)
    control = Control()
    caller, waits = make_caller(control, clock)
    pacer = caller.pacers[Budget.IDENTITY_PROTECTION]
    results: list[Accepted] = []
    async with graph(volley) as client:

        async def one(seed: int) -> None:
            results.append(await caller(confirm(client, ids(1, seed=seed))))

        async with anyio.create_task_group() as tasks:
            for seed in range(3):
                tasks.start_soon(one, seed)
            await volley.arrived.wait()  # all three in flight, sent at the old pace
            volley.release.set()
    assert len(results) == 3
    assert (pacer.throttles, pacer.slowdowns) == (3, 1)
    assert control.tally.throttled == 3
    assert waits.waits == [0.0, 0.0, 0.0]  # the pacer spaces the retries, not a back-off
    assert len(volley.requests) == 6


def test_inner_429s_of_batches_sent_before_the_slow_down_slow_the_pace_once() -> None:
    clock = FakeTime()
    caller, _ = make_caller(Control(), clock)
    pacer = caller.pacers[Budget.DIRECTORY_WRITES]
    left_at = clock.now  # two JSON batches left together; both come back with inner 429s
    clock.now += 0.2
    caller.inner_throttled(Budget.DIRECTORY_WRITES, [1.0, 1.0], left_at)
    clock.now += 0.1
    caller.inner_throttled(Budget.DIRECTORY_WRITES, [1.0], left_at)  # the same volley
    assert (pacer.throttles, pacer.slowdowns, caller.control.tally.throttled) == (2, 1, 3)
    clock.now += 2.0
    caller.inner_throttled(Budget.DIRECTORY_WRITES, [1.0], clock.now - 0.1)  # sent at the new pace
    assert (pacer.throttles, pacer.slowdowns) == (3, 2)


@pytest.mark.anyio
async def test_retry_after_holds_every_start() -> None:
    clock = FakeTime()
    answers = script((503, {"Retry-After": "2"}), (429, {"Retry-After": "3"}))
    caller, waits = make_caller(Control(), clock)
    pacer = caller.pacers[Budget.IDENTITY_PROTECTION]
    async with graph(answers) as client:
        assert (await caller(confirm(client, ids(1)))).status == 204
    assert clock.sleeps == [2.0, 3.0]  # each try waited out the Retry-After, on the pacer
    assert waits.waits == [0.0, 0.0]
    assert pacer.slowdowns == 1  # the 429 slowed the pace; the 503's Retry-After did not


@pytest.mark.anyio
async def test_answers_after_a_429_win_the_pace_back() -> None:
    events = Events()
    caller, _ = make_caller(Control(observer=events), FakeTime())
    async with graph(script(429)) as client:
        await caller(confirm(client, ids(1)))
        await caller(confirm(client, ids(1, seed=2)))
    rates = [e["rate_per_second"] for e in events.named("request")]
    assert rates == [round(1 / 1.1, 4), 1.0, 1.0]
    assert [e["throttled_so_far"] for e in events.named("request")] == [1, 1, 1]


@pytest.mark.anyio
async def test_a_403_trips_the_breaker_naming_the_permission() -> None:
    answers = script(403)
    hooks = Hooks()
    control = Control()
    caller, waits = make_caller(control, FakeTime())
    async with graph(answers) as client:
        with pytest.raises(Forbidden):
            await caller(confirm(client, ids(1), hooks))
    assert len(answers.requests) == 1 and waits.waits == []  # not tried again
    assert isinstance(control.breaker.tripped, AuthError)
    message = str(control.breaker.tripped)
    assert CONFIRM.permission in message
    assert "403 e403" in message and "rid-1" in message
    assert [a.outcome for a, _ in hooks.answers] == [Outcome.FORBIDDEN]


@pytest.mark.anyio
async def test_a_refused_token_stops_the_call_at_once() -> None:
    sim = GraphSimulator(FAST, tokens={TEST_TOKEN})
    control = Control()
    caller, waits = make_caller(control, FakeTime())
    hooks = Hooks()
    async with http_client(StaticToken("revoked"), timeout=5.0, transport=sim.transport()) as http:
        client = GraphClient(http, GRAPH, "v1.0")
        with pytest.raises(AuthError, match="cannot be renewed"):
            await caller(confirm(client, ids(1), hooks))
    assert len(hooks.intents) == 1 and waits.waits == []  # not tried again
    assert control.flight.count == 0
    assert sim.record.statuses[401] == 1
    assert sim.record.accepted["confirmCompromised"] == []


class RefusedWhileAnotherHangs(httpx.AsyncBaseTransport):
    """The first request is refused 403 once a second is in flight; that one never answers."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.second = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) == 1:
            await self.second.wait()
            body = graph_error("Authorization_RequestDenied")
            return httpx.Response(403, json=body, headers={"request-id": "rid-1"})
        self.second.set()
        await anyio.sleep_forever()
        raise AssertionError("never answered")


@pytest.mark.anyio
async def test_a_403_cuts_off_the_other_requests_of_the_run() -> None:
    transport = RefusedWhileAnotherHangs()
    control = Control(grace=30.0)
    caller, _ = make_caller(control, FakeTime())
    outcomes: list[str] = []

    async def one(client: GraphClient, seed: int) -> None:
        try:
            await caller(confirm(client, ids(1, seed=seed)))
        except Forbidden:
            outcomes.append("forbidden")

    async with graph(transport) as client:
        with anyio.fail_after(10), control.scope():
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(one, client, 1)
                tasks.start_soon(one, client, 2)
    assert outcomes == ["forbidden"]  # the other one was cut off, not answered
    assert isinstance(control.breaker.tripped, AuthError)
    assert control.flight.count == 0
    assert len(transport.requests) == 2


@pytest.mark.anyio
async def test_each_request_is_told_with_its_fields() -> None:
    events = Events()
    caller, _ = make_caller(Control(observer=events), FakeTime())
    answers = script(429)
    async with graph(answers) as client:
        await caller(confirm(client, ids(2), fields={"action": "confirm", "ids": 2, "batch": 7}))
    throttled, accepted = events.named("request")
    for event, request in zip((throttled, accepted), answers.requests, strict=True):
        assert (event["action"], event["ids"], event["batch"]) == ("confirm", 2, 7)
        assert event["budget"] == "identity_protection"
        assert event["client_request_id"] == request.headers["client-request-id"]
        assert event["latency_ms"] >= 0
    assert (throttled["outcome"], throttled["http_status"]) == ("throttled", 429)
    assert (throttled["error_code"], throttled["request_id"]) == ("TooManyRequests", "rid-1")
    assert throttled["error_message"] == "HTTP 429 TooManyRequests: TooManyRequests said Graph"
    assert (accepted["outcome"], accepted["http_status"]) == ("accepted", 204)
    assert (accepted["error_code"], accepted["request_id"]) == (None, "rid-2")


@pytest.mark.anyio
async def test_a_requests_latency_is_measured_on_the_pacers_clock() -> None:
    # The pacers' fake clock reads 1000 s, whatever the host's uptime; each answer takes 0.25 s
    # of it. Measured on the host's clock instead, the latency would be its uptime minus 1000.
    events = Events()
    clock = FakeTime()
    caller, _ = make_caller(Control(observer=events), clock)
    async with graph(script(429, clock=clock, latency=0.25)) as client:
        await caller(confirm(client, ids(2)))
    assert [e["latency_ms"] for e in events.named("request")] == [250.0, 250.0]


@pytest.mark.anyio
async def test_a_call_spends_its_cost_of_its_own_budget() -> None:
    clock = FakeTime()
    caller, _ = make_caller(Control(), clock)

    def batch_of(n: int) -> Call[str]:
        async def send(crid: str) -> str:
            return crid

        return Call(Budget.DIRECTORY_WRITES, send=send, permission="p", cost=n)

    await caller(batch_of(20))  # a full JSON batch at 20 a second
    await caller(batch_of(5))
    await caller(confirm_free())  # another budget: no wait for this one
    assert clock.sleeps == [1.0]
    assert caller.control.tally.requests == 3


def confirm_free() -> Call[str]:
    async def send(crid: str) -> str:
        return crid

    return Call(Budget.IDENTITY_PROTECTION, send=send, permission="p")


@pytest.mark.anyio
async def test_in_flight_counts_the_request_only_while_it_is_out() -> None:
    control = Control()
    caller, _ = make_caller(control, FakeTime())
    during: list[int] = []

    async def send(crid: str) -> str:
        during.append(control.flight.count)
        raise Forbidden("HTTP 403", status=403)

    with pytest.raises(Forbidden):
        await caller(Call(Budget.DIRECTORY_READS, send=send, permission="p"))
    assert during == [1]
    assert control.flight.count == 0

    async def broken(crid: str) -> str:
        during.append(again.flight.count)
        raise RuntimeError("a bug")

    again = Control()
    caller, _ = make_caller(again, FakeTime())
    with pytest.raises(RuntimeError):
        await caller(Call(Budget.DIRECTORY_READS, send=broken, permission="p"))
    assert during == [1, 1]
    assert again.flight.count == 0


# -- the tally -----------------------------------------------------------------------------------
def test_the_tally_counts_per_action_and_state() -> None:
    tally = Tally()
    tally.count("disable", "done", 3)
    tally.count("disable", "failed")
    tally.count("confirm", "done", 60)
    assert tally.settled == {"disable": {"done": 3, "failed": 1}, "confirm": {"done": 60}}
    assert tally.total() == 64
    assert tally.total("done") == 63
    assert tally.total("unknown") == 0


def test_rates_are_observed_over_the_last_minute() -> None:
    now = time.monotonic()
    tally = Tally(started=now - 2 * WINDOW)
    tally._done_times.append((now - WINDOW - 5, 1000))  # long ago: not in the rate
    tally._request_times.append(now - WINDOW - 5)
    tally.count("confirm", "done", 120)
    tally.requested()
    tally.requested()
    settled, requests = tally.rates()
    assert settled == pytest.approx(120 / WINDOW, rel=0.01)
    assert requests == pytest.approx(2 / WINDOW, rel=0.01)
    assert tally.requests == 2
