"""The ledger's writer lock seen from a second, real process: who holds it can be read, the
refusal names them, `status` calls a held run running, and the lock is given back on release
and on death. The holder's details lie outside the locked byte, so that where locks are
mandatory (Windows) they can still be read; the last test runs that same logic here with a
mandatory-style one-byte lock."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batcher.errors import LedgerError
from batcher.job.status import status
from batcher.ledger import Ledger, RunScope, WriterLock
from batcher.platform import HOLDER_BYTES, LOCKED_BYTE, OS_LOCK, FileLock, LockCalls
from tests.helpers import REPO, cli_env, run_cli

IDENTITY = RunScope(actions=("confirm",), tenant="tenant-a", cloud="global", api_version="v1.0")

# A writer in its own process: opens the ledger (taking its lock), starts a run, says "held",
# then on a line "release" closes the ledger cleanly and says "released"; killed, it just dies.
WRITER = """
import sys
from pathlib import Path
from batcher.ledger import Ledger, RunScope, RunRecord
identity = RunScope(actions=("confirm",), tenant="tenant-a", cloud="global", api_version="v1.0")
book = Ledger.open(Path(sys.argv[1]), identity)
book.begin_run(RunRecord("run", "d" * 64, command_line="batcher run ids.csv"))
print("held", flush=True)
if sys.stdin.readline().strip() == "release":
    book.close()
    print("released", flush=True)
    sys.stdin.readline()
"""

# A lock like Windows' (one byte, LOCKED_BYTE; the file not removed while open) held by a
# process of its own: fcntl byte-range locks belong to a process, so the test needs two.
BYTE_LOCKER = """
import fcntl, sys
from pathlib import Path
from batcher.platform import LOCKED_BYTE, OS_LOCK, FileLock, LockCalls
calls = LockCalls(
    take=lambda fd: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, LOCKED_BYTE),
    give_back=lambda fd: fcntl.lockf(fd, fcntl.LOCK_UN, 1, LOCKED_BYTE),
    removable=False,
)
lock = FileLock.try_acquire(Path(sys.argv[1]), calls)
print("held" if isinstance(lock, FileLock) else "refused", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


class Child:
    """A Python child speaking line by line over pipes (it waits on its stdin: no sleeps)."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def said(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "incident.sqlite"


@pytest.fixture
def writer(ledger: Path) -> Iterator[Child]:
    child = Child(WRITER, str(ledger))
    try:
        assert child.said() == "held"
        yield child
    finally:
        child.end()


def holder_text(pid: int) -> str:
    return f"pid {pid} on {socket.gethostname()}"


def test_a_second_process_is_told_another_batcher_writes_the_ledger_and_by_whom(
    ledger: Path, writer: Child
) -> None:
    with pytest.raises(LedgerError) as refused:
        Ledger.open(ledger, IDENTITY)
    message = str(refused.value)
    assert message.startswith(f"{ledger}: another batcher is writing this ledger (")
    assert f"({holder_text(writer.proc.pid)})" in message
    assert "cannot create" not in message
    lock = ledger.with_name(ledger.name + ".lock")
    assert lock.read_text(encoding="utf-8") == holder_text(writer.proc.pid)


@pytest.mark.e2e  # the real command in a subprocess
def test_status_calls_a_run_whose_writer_is_alive_running_not_killed(
    ledger: Path, writer: Child
) -> None:
    seen = status(ledger)
    assert seen.live and not seen.killed
    shown = run_cli("status", ledger, cwd=ledger.parent, env=cli_env())
    assert shown.code == 0, shown.stderr
    assert "a batcher is writing this ledger now" in shown.stderr + shown.stdout
    assert "ended without finishing" not in shown.stderr + shown.stdout


def test_a_released_lock_lets_a_later_writer_in_and_status_sees_the_run_unfinished(
    ledger: Path, writer: Child
) -> None:
    writer.tell("release")
    assert writer.said() == "released"  # the writer still runs: only the release let go
    assert not WriterLock.held(ledger)
    assert not ledger.with_name(ledger.name + ".lock").exists()
    seen = status(ledger)
    assert not seen.live and seen.killed  # its run was begun and never ended
    Ledger.open(ledger, IDENTITY).close()


def test_a_killed_writer_lets_a_later_writer_in(ledger: Path, writer: Child) -> None:
    writer.proc.kill()
    writer.proc.wait(timeout=30)
    assert not WriterLock.held(ledger)
    Ledger.open(ledger, IDENTITY).close()


def test_release_gives_the_lock_back_even_while_a_copy_of_its_descriptor_is_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.lock"
    kept = dataclasses.replace(OS_LOCK, removable=False)  # the file stays, as on Windows
    lock = FileLock.try_acquire(path, kept)
    assert isinstance(lock, FileLock)
    copy = os.dup(lock.fileno())  # as a child process started meanwhile would inherit it
    try:
        lock.release()
        again = FileLock.try_acquire(path, kept)
        assert isinstance(again, FileLock), again  # closing alone would not have let go
        again.release()
    finally:
        os.close(copy)


@pytest.mark.posix
def test_with_a_one_byte_lock_as_on_windows_the_holder_can_be_read_and_the_file_is_reused(
    tmp_path: Path,
) -> None:
    """Windows' logic, run here: fcntl locks one byte like msvcrt.locking, the file stays."""
    import fcntl

    BYTE_LOCK = LockCalls(
        take=lambda fd: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, LOCKED_BYTE),
        give_back=lambda fd: fcntl.lockf(fd, fcntl.LOCK_UN, 1, LOCKED_BYTE),
        removable=False,
    )
    path = tmp_path / "incident.sqlite.lock"
    child = Child(BYTE_LOCKER, str(path))
    try:
        assert child.said() == "held"
        fd = os.open(path, os.O_RDWR)
        try:  # the details are outside the lock: a mandatory lock would not stop this read
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, HOLDER_BYTES, 0)
            fcntl.lockf(fd, fcntl.LOCK_UN, HOLDER_BYTES, 0)
            with pytest.raises(OSError):
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, LOCKED_BYTE)
        finally:
            os.close(fd)
        assert FileLock.try_acquire(path, BYTE_LOCK) == holder_text(child.proc.pid)
        child.tell("release")
        assert child.said() == "released"
        assert path.exists() and path.read_bytes() == b""  # emptied, not removed
        mine = FileLock.try_acquire(path, BYTE_LOCK)
        assert isinstance(mine, FileLock)
        assert path.read_text(encoding="utf-8") == holder_text(os.getpid())
        mine.release()
    finally:
        child.end()
