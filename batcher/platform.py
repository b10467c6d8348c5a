"""The one place for OS-specific calls: stop signals, the ledger's writer lock, owner-only files.

Each branch is small on purpose: Windows cannot be tested on the machines that build batcher,
so what decides is the same on every OS, and only the raw call differs.
- Signals: ``signal.signal`` on every OS (SIGINT and SIGTERM; SIGBREAK, Ctrl-Break, on Windows).
- The writer lock: ``fcntl.flock`` on POSIX, ``msvcrt.locking`` of one byte far past the
  holder's details on Windows (a lock there is mandatory: the details must stay readable).
- Owner-only files: created with mode 0600 where POSIX modes exist; on Windows a file made in
  the user's own folders is already private to them (NTFS inherits the folder's ACL). Replacing
  one that another program holds open (Excel, on Windows) is retried briefly.
- Commands to paste: quoted for the shell the user is in (POSIX, cmd or PowerShell).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from batcher import shells
from batcher.shells import Shell

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
HOLDER_BYTES = 512  # the holder's details: text at the start of the lock file, read by others
LOCKED_BYTE = 1 << 20  # the one byte the lock covers, far past the text, so that the text
# stays readable where locks are mandatory (Windows): another process can say who holds it
_BINARY = getattr(os, "O_BINARY", 0)  # Windows opens files as text unless told otherwise


@dataclass(frozen=True)
class LockCalls:
    """The only part of the writer lock that differs by OS: take the lock on ``LOCKED_BYTE`` of
    an open file without waiting (OSError while another process holds it), give it back, and
    whether a file may be removed while it is open."""

    take: Callable[[int], None]
    give_back: Callable[[int], None]
    removable: bool


def _flock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the whole file, advisory: never stops a read


def _funlock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _msvcrt_lock(fd: int) -> None:  # pragma: no cover - exercised on Windows only
    import msvcrt

    os.lseek(fd, LOCKED_BYTE, os.SEEK_SET)  # msvcrt locks from the current position
    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]


def _msvcrt_unlock(fd: int) -> None:  # pragma: no cover - exercised on Windows only
    import msvcrt

    os.lseek(fd, LOCKED_BYTE, os.SEEK_SET)
    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined,unused-ignore]


OS_LOCK = (
    LockCalls(_msvcrt_lock, _msvcrt_unlock, removable=False)
    if WINDOWS
    else LockCalls(_flock, _funlock, removable=True)
)


class FileLock:
    """An exclusive OS lock on a file beside the ledger, given back on release and let go by the
    OS when the process is killed. The file's first bytes say who holds it, outside the locked
    byte; the holder removes the file (or, where an open file cannot be removed, empties it)."""

    def __init__(self, path: Path, fd: int, calls: LockCalls) -> None:
        self.path = path
        self._fd = fd
        self._calls = calls

    @classmethod
    def try_acquire(cls, path: Path, calls: LockCalls = OS_LOCK) -> FileLock | str:
        """The lock, or (when another process holds it) what the lock file says about them."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _BINARY, 0o600)
            try:
                calls.take(fd)
            except OSError:
                holder = _holder(fd)
                os.close(fd)
                return holder
            if not calls.removable or _same_file(path, fd):
                break
            calls.give_back(fd)  # the holder removed it between our open and lock: take the new one
            os.close(fd)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        text = f"pid {os.getpid()} on {socket.gethostname()}"
        os.write(fd, text.encode()[:HOLDER_BYTES])
        return cls(path, fd, calls)

    def fileno(self) -> int:
        return self._fd

    def release(self) -> None:
        """Remove (or empty) the lock file while still holding the lock, give it back, close it."""
        with contextlib.suppress(OSError):
            if self._calls.removable:
                os.unlink(self.path)
            else:
                os.ftruncate(self._fd, 0)
        with contextlib.suppress(OSError):
            self._calls.give_back(self._fd)
        os.close(self._fd)


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says (the holder may not have written it yet)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, HOLDER_BYTES).decode("utf-8", "replace").strip("\0 \r\n")
    except OSError as exc:
        return f"another process; who could not be read: {exc.strerror}"
    return text or "another process"


def _same_file(path: Path, fd: int) -> bool:
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


class HeldOpen(PermissionError):
    """A file could not be replaced, try after try: another program may hold it open (on
    Windows, Excel keeps the files it shows open, and the OS refuses to replace them)."""


@dataclass(frozen=True)
class Patience:
    """How long to wait for a file another program holds open, before giving up: ``tries``
    renames, ``first_wait`` seconds after the first refusal, doubling (0.1 s to 1.6 s, 3.1 s in
    all). ``replace`` is the OS's rename over an existing file."""

    tries: int = 6
    first_wait: float = 0.1
    sleep: Callable[[float], None] = time.sleep
    replace: Callable[[str, Path], None] = os.replace


PATIENCE = Patience()


def replace_patiently(temp: str, path: Path, patience: Patience = PATIENCE) -> None:
    """Rename ``temp`` over ``path``; while the OS refuses (PermissionError), wait and try again.
    Raises HeldOpen, naming ``path``, when it still refuses after ``patience.tries`` tries."""
    retrying = Retrying(
        retry=retry_if_exception_type(PermissionError),
        stop=stop_after_attempt(patience.tries),
        wait=wait_exponential(multiplier=patience.first_wait),
        sleep=patience.sleep,
        reraise=True,
    )
    try:
        retrying(patience.replace, temp, path)
    except PermissionError as exc:
        raise HeldOpen(exc.errno, exc.strerror or "permission denied", str(path)) from None


def write_private(
    path: Path, write: Callable[[IO[bytes]], None], patience: Patience = PATIENCE
) -> None:
    """Write a whole file atomically (a temporary file, then a rename), owner-readable only.
    A file another program holds open is waited for (``patience``), then HeldOpen is raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        replace_patiently(temp, path, patience)
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
def shell(env: Mapping[str, str] | None = None, windows: bool = WINDOWS) -> Shell:
    """The shell a printed command will be pasted into, from the environment:

    1. ``BATCHER_SHELL`` when it is ``posix``, ``cmd`` or ``powershell``;
    2. POSIX outside Windows, and in Git Bash or MSYS2 on Windows (they set ``MSYSTEM``);
    3. PowerShell when ``PSModulePath`` holds a folder in the user's profile (PowerShell adds
       the user's modules folder for itself and the programs it starts; cmd does not);
    4. cmd when ``PROMPT`` is set (cmd sets it for the programs it starts; PowerShell does not);
    5. otherwise PowerShell, the Windows terminal's default.
    """
    env = os.environ if env is None else env
    named = env.get("BATCHER_SHELL", "").strip().lower()
    if named in set(Shell):
        return Shell(named)
    if not windows or env.get("MSYSTEM"):
        return Shell.POSIX
    profile = env.get("USERPROFILE", "").rstrip("\\/").lower()
    folders = [f.strip().lower() for f in env.get("PSModulePath", "").split(";")]
    if profile and any(f.startswith(profile + "\\") for f in folders):
        return Shell.POWERSHELL
    return Shell.CMD if env.get("PROMPT") else Shell.POWERSHELL


def command_line(args: Sequence[str]) -> str:
    """A command line the user's shell (``shell()``) reads back as ``args``."""
    return shells.command_line(args, shell())


def in_folder(folder: str, command: str) -> str:
    """``command`` run from ``folder`` (its relative paths are relative to it)."""
    return shells.in_folder(folder, command, shell())


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
