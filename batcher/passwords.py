"""Per-user secrets: random passwords that no repr, log line or exception text can show.

A ``Secret`` is a ``str`` (JSON encodes its real value, so Graph receives it) whose ``str``,
``repr`` and ``format`` are masked: an f-string, a log field or an exception message that
holds one says ``***``. Only ``reveal`` gives the value, and only the help-desk CSV
(``--passwords-out``, an owner-only file) writes it.
"""

from __future__ import annotations

import csv
import io
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from batcher.errors import ConfigError
from batcher.platform import append_private

MASK = "***"
PASSWORD_LENGTH = 24  # Entra accepts 8 to 256 characters
# no = + - @ (a spreadsheet reads a cell starting with one as a formula) and no , or quote
SYMBOLS = "!#$%&()*./:;<>?[]^_{|}~"
KINDS = (string.ascii_lowercase, string.ascii_uppercase, string.digits, SYMBOLS)
SHEET_COLUMNS = ("user_id", "user_principal_name", "action", "state", "password")


class Secret(str):
    """A secret string: JSON and ``reveal`` see its value; str, repr and format see ``***``."""

    __slots__ = ()

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def reveal(self) -> str:
        return str.__str__(self)


def new_password(length: int = PASSWORD_LENGTH) -> Secret:
    """A random password with each of the four kinds Entra counts (lower, upper, digit,
    symbol), so that any complexity rule is met; from ``secrets``, shuffled by SystemRandom."""
    if length < len(KINDS):
        raise ValueError(f"a password needs at least {len(KINDS)} characters")
    chars = [secrets.choice(kind) for kind in KINDS]
    every = "".join(KINDS)
    chars += [secrets.choice(every) for _ in range(length - len(KINDS))]
    secrets.SystemRandom().shuffle(chars)
    return Secret("".join(chars))


def secrets_in(body: Mapping[str, Any] | None) -> list[Secret]:
    """The secrets inside a request body (nested mappings)."""
    found: list[Secret] = []
    for value in (body or {}).values():
        if isinstance(value, Secret):
            found.append(value)
        elif isinstance(value, Mapping):
            found += secrets_in(value)
    return found


def check_sheet_path(path: Path) -> None:
    """Refuse a --passwords-out whose folder does not exist (nothing is created silently)."""
    if not path.parent.is_dir():
        raise ConfigError(
            f"--passwords-out {path}: the folder {path.parent} does not exist; create it (on "
            "an encrypted disk only the help desk can read) or choose another file"
        )
    if path.is_dir():
        raise ConfigError(f"--passwords-out {path} is a folder; name a file (.csv)")


class PasswordSheet:
    """The help desk's owner-only CSV: one row per user whose password a request set (or may
    have set), appended as each step settles, so a killed run keeps what it wrote."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self.rows = 0

    def _open(self) -> IO[str]:
        if self._fh is None:
            fh = append_private(self.path)
            if fh.tell() == 0:
                fh.write(_line(SHEET_COLUMNS))
            self._fh = fh
        return self._fh

    def write(self, user_id: str, upn: str | None, action: str, state: str, secret: Secret) -> None:
        self._open().write(_line((user_id, upn or "", action, state, secret.reveal())))
        self.rows += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _line(values: tuple[str, ...]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()
