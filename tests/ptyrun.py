"""Run a command on a real pseudo-terminal, as an operator at a keyboard would."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import time

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class PtyProcess:
    """The child gets the pty as its controlling terminal: Ctrl-C typed here is a real SIGINT."""

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child
            try:
                os.chdir(cwd)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.raw = ""
        self.returncode: int | None = None

    @property
    def text(self) -> str:
        """What the screen showed, without colour and cursor codes."""
        return _ANSI.sub("", self.raw)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # the child closed the terminal
            return False
        if not data:
            return False
        self.raw += data.decode("utf-8", "replace")
        return True

    def expect(self, pattern: str, timeout: float = 60) -> str:
        """Read until ``pattern`` (a regex) shows on the screen; fail with the screen if not."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 1.0)):
                if re.search(pattern, self.text):
                    break
                raise AssertionError(f"{pattern!r} never showed; the screen was:\n{self.text}")
        return self.text

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self, timeout: float = 60) -> int:
        """Read until the child exits; return its exit code (negative for a signal)."""
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                raise AssertionError(f"still running after {timeout}s:\n{self.text}")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode
