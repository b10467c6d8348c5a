"""The one place for OS-specific calls: stop signals, the ledger's writer lock, owner-only files.

Each branch is small on purpose: Windows cannot be tested on the machines that build batcher.
- Signals: ``signal.signal`` on every OS (SIGINT and SIGTERM; SIGBREAK, Ctrl-Break, on Windows).
- The writer lock: ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows.
- Owner-only files: created with mode 0600 where POSIX modes exist; on Windows a file made in
  the user's own folders is already private to them (NTFS inherits the folder's ACL).
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

WINDOWS = sys.platform == "win32"
STOP_SIGNALS = (
    (signal.SIGINT, signal.SIGTERM, signal.SIGBREAK)  # type: ignore[attr-defined,unused-ignore]
    if WINDOWS
    else (signal.SIGINT, signal.SIGTERM)
)


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[int], None]) -> Iterator[None]:
    """Call ``handler(signum)`` for Ctrl-C and termination requests until the block ends.

    The handler runs in the main thread between two Python instructions, so it must only set
    flags or hand work to the event loop (``loop.call_soon_threadsafe``), or raise.
    """

    def on_signal(signum: int, frame: Any) -> None:
        handler(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def read_line(prompt: str, write: Callable[[str], None]) -> str:
    """Read one line from the terminal, interruptible by Ctrl-C at once.

    On POSIX a Ctrl-C can be delivered to a worker thread (Polars keeps a pool); the main thread
    then only notices it when it runs Python again. Waiting in short ``select`` slices lets it do
    so within a tenth of a second instead of after the next Enter. Raises EOFError at end of input.
    """
    write(prompt)
    if WINDOWS:  # Windows delivers Ctrl-C to the console reader itself
        return input()
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0.1)
        if ready:
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            return line.rstrip("\r\n")


def kill_self() -> None:
    """Die at once, as a power cut or `kill -9` would (the crash tests' failpoints)."""
    if WINDOWS:  # pragma: no cover - exercised on Windows only
        os._exit(137)
    os.kill(os.getpid(), signal.SIGKILL)


# -- the writer lock ------------------------------------------------------------------------------
class FileLock:
    """An exclusive OS lock on a file beside the ledger, released on exit and when the process
    is killed. The file says who holds it, and is removed by the holder when it lets go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def try_acquire(cls, path: Path) -> FileLock | str:
        """The lock, or (when another process holds it) what the lock file says about them."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                _lock(fd)
            except OSError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip()
                os.close(fd)
                return holder or "another process"
            if _same_file(path, fd):
                break
            os.close(fd)  # the holder removed it between our open and lock: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        return cls(path, fd)

    def release(self) -> None:
        """Remove the lock file while still holding the lock, then let go."""
        with contextlib.suppress(OSError):
            if WINDOWS:  # an open file cannot be removed there: empty it instead
                os.ftruncate(self._fd, 0)
            else:
                os.unlink(self.path)
        os.close(self._fd)


def _lock(fd: int) -> None:
    if WINDOWS:  # pragma: no cover - exercised on Windows only
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _same_file(path: Path, fd: int) -> bool:
    if WINDOWS:  # pragma: no cover - the file is never removed there
        return True
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


# -- owner-only files -----------------------------------------------------------------------------
def create_private(path: Path) -> None:
    """Create ``path`` empty (or keep it) so that only its owner can read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    if not WINDOWS:
        os.chmod(path, 0o600)  # also when an empty file was already there


def write_private(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a whole file atomically (a temporary file, then a rename), owner-readable only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def append_private(path: Path) -> IO[str]:
    """Open ``path`` for appending text lines, creating it owner-readable only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


# -- commands to paste ----------------------------------------------------------------------------
def command_line(args: Sequence[str]) -> str:
    """A command line this OS's shell reads back as ``args``."""
    if WINDOWS:  # pragma: no cover - exercised on Windows only
        import subprocess

        return subprocess.list2cmdline(list(args))
    return " ".join(shlex.quote(a) for a in args)


def in_folder(folder: str, command: str) -> str:
    """``command`` run from ``folder`` (its relative paths are relative to it)."""
    if WINDOWS:  # pragma: no cover - exercised on Windows only
        return f'cd /d "{folder}" && {command}'
    return f"cd {shlex.quote(folder)} && {command}"


def program() -> list[str]:
    """How to start this batcher again: ``batcher`` when that name finds this one on PATH,
    otherwise the path it was started by (or ``python -m batcher``)."""
    argv0 = sys.argv[0] if sys.argv else "batcher"
    if argv0.endswith("__main__.py") or argv0 == "-m":
        return [sys.executable, "-m", "batcher"]
    found = shutil.which("batcher")
    here = shutil.which(argv0) or argv0
    if found and os.path.realpath(found) == os.path.realpath(here):
        return ["batcher"]
    return [os.path.abspath(here)]
