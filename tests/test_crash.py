"""Crash tests: real processes killed at many points; re-running the same command finishes.

Every kill is real (SIGKILL, SIGINT, SIGTERM to the `batcher` process). Kill moments are chosen
either by a failpoint inside the process (see batcher/failpoints.py) or from outside once the
simulator has accepted a given number of IDs (a condition, never a sleep).
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from batcher.ledger import Ledger
from batcher.simulator import DirectoryUser, GraphSimulator, RunningSimulator
from tests.helpers import BATCHER, FAST, TEST_TOKEN, cli_env, counts, ids, run_cli, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.posix]  # SIGKILL, SIGINT, SIGTERM

BATCH_SIZE = 10
MAX_IN_FLIGHT = 2
WINDOW = BATCH_SIZE * MAX_IN_FLIGHT  # IDs that may be in flight when a process dies
ACTION = "confirmCompromised"

# (failpoint, hit count): the process kills itself there. Each failpoint once, and the commit
# both early and late in a process's run; kills from outside fall anywhere in between.
FAILPOINT_KILLS = [
    ("send.after_intent", 4),
    ("send.after_answer", 5),
    ("ledger.before_commit", 3),
    ("ledger.before_commit", 17),
    ("ledger.before_begin", 13),
]
EXTERNAL_KILLS = 4  # SIGKILL from outside, spread over the run


def _setup(tmp_path: Path, url: str, n_ids: int) -> tuple[list[str], Path, list[str]]:
    ids = [str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(n_ids)]
    (tmp_path / "ids.csv").write_text("id\n" + "\n".join(ids) + "\n", encoding="utf-8")
    config = write_config(
        tmp_path / "config.toml",
        url,
        send={"batch_size": BATCH_SIZE, "max_in_flight": MAX_IN_FLIGHT, "rate_per_second": 60.0},
    )
    ledger = tmp_path / "ledger.sqlite"
    command = [
        BATCHER,
        "run",
        "--yes",
        "--max-users",
        "100000",
        "ids.csv",
        "--config",
        str(config),
        "--ledger",
        str(ledger),
    ]
    return ids, ledger, command


def _start(command: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=cli_env(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], text: str) -> str:
    """Read the process's stderr line by line until ``text`` shows up (or it ends)."""
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never appeared in: {seen}")


def _states(ledger: Path) -> dict[str, int]:
    return counts(ledger)["confirm"]


def _kill_plan() -> list[tuple[str, int]]:
    """Failpoint kills interleaved with kills from outside, spread over the whole run."""
    external = [("external", 0)] * EXTERNAL_KILLS
    plan: list[tuple[str, int]] = []
    for i in range(max(len(FAILPOINT_KILLS), len(external))):
        plan += FAILPOINT_KILLS[i : i + 1] + external[i : i + 1]
    return plan


def _unsure(ledger: Path) -> set[str]:
    """Steps a kill left unknown (a request may have applied them)."""
    reader = Ledger.open_existing(ledger)
    try:
        known = reader.known_steps()
    finally:
        reader.close()
    return set(known.filter(known["state"] == "unknown").get_column("user_id"))


def test_sigkill_at_many_points_loses_nothing_and_resends_at_most_the_window(
    tmp_path: Path, simulator_factory: Any
) -> None:
    """The nine kills of the plan in one run of 300 IDs: failpoint kills interleaved with
    kills from outside."""
    sim = simulator_factory(
        FAST.model_copy(update={"latency_min_seconds": 0.005, "latency_max_seconds": 0.03})
    )
    record = sim.simulator.record
    accepted = record.accepted[ACTION]
    ids, ledger, command = _setup(tmp_path, sim.url, 300)
    step = 2 * BATCH_SIZE  # an outside kill comes once two more batches were accepted
    kills: list[str] = []
    made_unsure: list[int] = []  # IDs each kill left unsure (in flight when it struck)
    ever_unsure: set[str] = set()
    unsure: set[str] = set()

    plan = _kill_plan()
    for name, count in plan:
        start = len(accepted)
        if name == "external":
            proc = _start(command, tmp_path)
            assert record.wait_for_accepted(ACTION, start + step, timeout=60)
            proc.kill()
        else:
            proc = _start(command, tmp_path, BATCHER_FAILPOINT=f"{name}:{count}")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, (name, count, proc.returncode, err)
        kills.append(name if name == "external" else f"{name}:{count}")
        now_unsure = _unsure(ledger)
        made_unsure.append(len(now_unsure - unsure))
        ever_unsure |= now_unsure
        unsure = now_unsure
        assert len(accepted) < len(ids), kills  # every kill struck before the run's end

    done = _start(command, tmp_path)  # the same command, once more, to the end
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err

    assert len(kills) == len(FAILPOINT_KILLS) + EXTERNAL_KILLS, kills
    assert set(accepted) == set(ids)  # every valid ID was accepted at least once
    assert _states(ledger) == {"done": len(ids)}  # and the ledger knows it
    assert max(made_unsure) <= WINDOW, list(zip(kills, made_unsure, strict=True))
    resent = [uid for uid, n in Counter(accepted).items() for _ in range(n - 1)]
    assert set(resent) <= ever_unsure  # only IDs a kill left unsure were sent again
    assert len(resent) <= len(kills) * WINDOW
    assert resent  # some kills really did catch IDs in flight


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_finishes_requests_in_flight_then_resume_resends_nothing(
    tmp_path: Path, simulator_factory: Any, signum: signal.Signals
) -> None:
    sim = simulator_factory(
        FAST.model_copy(update={"latency_min_seconds": 0.02, "latency_max_seconds": 0.05})
    )
    record = sim.simulator.record
    accepted = record.accepted[ACTION]
    ids, ledger, command = _setup(tmp_path, sim.url, 400)
    proc = _start(command, tmp_path)
    assert record.wait_for_accepted(ACTION, 5 * BATCH_SIZE, timeout=60)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err  # 130 for SIGINT, 143 for SIGTERM
    assert "stopping: no new requests" in err
    assert "to resume: " in err and "run --yes --max-users 100000 ids.csv" in err
    assert "Traceback" not in err
    sent_before = len(accepted)
    assert sent_before < len(ids)  # it really stopped early
    states = _states(ledger)
    assert states.get("done", 0) == sent_before  # every answer in flight was recorded
    assert "unknown" not in states  # nothing sent was left without its answer

    done = _start(command, tmp_path)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert sorted(accepted) == sorted(ids)  # nothing was sent twice
    assert _states(ledger) == {"done": len(ids)}


def test_second_signal_stops_at_once_and_stays_resumable(
    tmp_path: Path, simulator_factory: Any
) -> None:
    sim = simulator_factory(
        FAST.model_copy(update={"latency_min_seconds": 1.0, "latency_max_seconds": 1.0})
    )
    record = sim.simulator.record
    accepted = record.accepted[ACTION]
    ids, ledger, command = _setup(tmp_path, sim.url, 100)
    proc = _start(command, tmp_path)
    assert record.wait_for_accepted(ACTION, BATCH_SIZE, timeout=60)
    proc.send_signal(signal.SIGINT)
    seen = _read_until(proc, "stopping: no new requests")  # the first one was handled
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, seen + err
    assert "stopping: now" in err
    fast = simulator_factory()
    config = write_config(
        tmp_path / "config.toml",
        fast.url,
        send={"batch_size": BATCH_SIZE, "max_in_flight": MAX_IN_FLIGHT},
    )
    done = run_cli(
        "run",
        "--yes",
        "--max-users",
        "100000",
        "ids.csv",
        "--config",
        config,
        "--ledger",
        ledger,
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr
    assert set(accepted) | set(fast.simulator.record.accepted[ACTION]) == set(ids)
    assert _states(ledger) == {"done": len(ids)}


CONTAIN_KILLS = 3
USERS = 150


def test_sigkill_during_a_containment_loses_no_user_and_keeps_each_users_order(
    tmp_path: Path,
) -> None:
    """Three kills from outside while disable, revoke-sessions and confirm all run; the same
    command then finishes. Extra writes are bounded by what can be in flight at a kill."""
    users = [
        DirectoryUser(id=uid, userPrincipalName=f"u{n}@contoso.com")
        for n, uid in enumerate(ids(USERS))
    ]
    slow = FAST.model_copy(update={"latency_min_seconds": 0.001, "latency_max_seconds": 0.005})
    with RunningSimulator(GraphSimulator(slow, tokens={TEST_TOKEN}, users=users)) as server:
        record = server.simulator.record
        (tmp_path / "ids.csv").write_text(
            "id\n" + "\n".join(u.id for u in users) + "\n", encoding="utf-8"
        )
        config = write_config(
            tmp_path / "config.toml",
            server.url,
            send={
                "batch_size": BATCH_SIZE,
                "max_in_flight": MAX_IN_FLIGHT,
                "rate_per_second": 40.0,
            },
            directory={  # 600 writes a second, in as many batches at once as the others
                "writes_per_window": 20,
                "writes_window_seconds": 20 / 600,
                "writes_at_once": MAX_IN_FLIGHT,
            },
        )
        ledger = tmp_path / "contain.sqlite"
        command = [
            BATCHER,
            "run",
            "--yes",
            "--max-users",
            "100000",
            "ids.csv",
            "--contain",
            "--config",
            str(config),
            "--ledger",
            str(ledger),
        ]
        for kill in range(1, CONTAIN_KILLS + 1):
            proc = _start(command, tmp_path)
            target = kill * 2 * USERS // (CONTAIN_KILLS + 1)  # kills spread over the writes
            with record.changed:
                assert record.changed.wait_for(lambda t=target: len(record.writes) >= t, 60)
            proc.kill()
            proc.communicate(timeout=60)
        status = run_cli("status", ledger, cwd=tmp_path)  # after the last kill
        assert "ended without finishing (killed" in status.stderr, status.stderr
        assert (
            "to resume: " in status.stderr
            and "run --yes --max-users 100000 ids.csv --contain" in status.stderr
        )
        done = _start(command, tmp_path)
        _, err = done.communicate(timeout=120)
        assert done.returncode == 0, err
        assert counts(ledger) == {
            a: {"done": USERS} for a in ("disable", "revoke-sessions", "confirm")
        }
        for user in users:
            ops = record.operations(user.id)
            assert ops and ops[0] == "disable" and ops[-1] == "revoke", (user.id, ops)
            first_revoke = ops.index("revoke")
            assert "disable" in ops[:first_revoke]  # never revoked before being disabled
        window = MAX_IN_FLIGHT * 20  # per-user requests in flight at most (JSON batches of 20)
        extra = sum(
            n - 1
            for n in Counter((w.op, w.user_id) for w in record.writes if w.status < 300).values()
        )
        assert extra <= CONTAIN_KILLS * window * 2, extra  # two directory actions
        resent = [u for u, n in Counter(record.accepted[ACTION]).items() if n > 1]
        assert len(resent) <= CONTAIN_KILLS * WINDOW


def test_sigkill_during_the_look_up_resumes_without_looking_up_again(
    tmp_path: Path, simulator_factory: Any
) -> None:
    """900 addresses take three JSON batches of look-ups; the process dies after the second
    batch was answered and before that answer was recorded. The same command then looks up
    only what the ledger does not hold yet, and acts on everyone once."""
    sim = simulator_factory(FAST)  # an open directory: any address is a member
    record = sim.simulator.record
    upns = [f"user{n:03d}@contoso.com" for n in range(900)]
    (tmp_path / "list.csv").write_text("Recipient\n" + "\n".join(upns) + "\n", encoding="utf-8")
    config = write_config(tmp_path / "config.toml", sim.url, send={"max_in_flight": 1})
    ledger = tmp_path / "ledger.sqlite"
    command = [
        BATCHER,
        "run",
        "--yes",
        "--max-users",
        "100000",
        "list.csv",
        "--config",
        str(config),
        "--ledger",
        str(ledger),
    ]
    killed = _start(command, tmp_path, BATCHER_FAILPOINT="send.after_answer:2")
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert record.batches == 2 and record.accepted[ACTION] == []  # killed while looking up
    done = _start(command, tmp_path)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    asked = Counter(upn for f in record.filters for upn in upns if f"'{upn}'" in f)
    assert all(asked[upn] == 1 for upn in upns[:300])  # recorded before the kill: not again
    assert all(asked[upn] == 2 for upn in upns[300:600])  # answered, but not recorded
    assert all(asked[upn] == 1 for upn in upns[600:])
    assert len(record.accepted[ACTION]) == 900 and counts(ledger) == {"confirm": {"done": 900}}
