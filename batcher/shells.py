"""Command lines quoted for the shell they will be pasted into: POSIX sh, Windows cmd, PowerShell.

Which shell that is, is the platform's call (``batcher.platform.shell``); this module only quotes.
- POSIX: ``shlex.quote``.
- cmd: each argument as Windows programs split their command line (the C runtime's rules), and
  where cmd would still act on it (``%`` expands even in quotes; an inner quote ends cmd's
  quoting) every character cmd treats specially, the quotes too, escaped with ``^``.
- PowerShell: single quotes (``''`` inside, and the typographic single quotes PowerShell also
  takes, doubled); ``&`` before a quoted program; no ``&&`` (Windows PowerShell 5.1 has none).
  Windows PowerShell 5.1 hands an argument to a program unescaped, only wrapped in quotes
  when it has a space: an inner ``"`` is given as ``\\"`` and a trailing ``\\`` doubled there,
  as the C runtime needs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from enum import StrEnum


class Shell(StrEnum):
    POSIX = "posix"
    CMD = "cmd"
    POWERSHELL = "powershell"


_SAFE = re.compile(r"[A-Za-z0-9_\-./\\:=+]+")  # needs no quotes in cmd or PowerShell
_CMD_ACTS_ON = re.compile(r'["%!^]')  # what cmd still acts on inside double quotes
_CMD_SPECIAL = re.compile(r'([()%!^"<>&|])')
_PS_SPLITS = re.compile(r"-.*[.:]")  # PowerShell splits a bare -x.y or -x:y in two
_PS_SINGLE_QUOTES = re.compile("(['\u2018\u2019\u201a\u201b])")


def _crt(arg: str) -> str:
    """``arg`` in double quotes as the C runtime splits a Windows command line: a quote inside
    is ``\\"``, and the backslashes before a quote (or before the closing one) are doubled."""
    inner = re.sub(r'(\\*)"', r'\1\1\\"', arg)
    inner = re.sub(r"(\\+)$", r"\1\1", inner)
    return f'"{inner}"'


def quote(arg: str, shell: Shell) -> str:
    """One argument, as ``shell`` reads it back unchanged."""
    if shell is Shell.POSIX:
        return shlex.quote(arg)
    if arg and _SAFE.fullmatch(arg) and not (shell is Shell.POWERSHELL and _PS_SPLITS.match(arg)):
        return arg
    if shell is Shell.CMD:
        quoted = _crt(arg)
        return _CMD_SPECIAL.sub(r"^\1", quoted) if _CMD_ACTS_ON.search(arg) else quoted
    passed = re.sub(r'(\\*)"', r'\1\1\\"', arg)  # as Windows PowerShell 5.1 passes it on
    if re.search(r"\s", passed):
        passed = re.sub(r"(\\+)$", r"\1\1", passed)
    return _ps_string(passed or '""')


def _ps_string(text: str) -> str:
    """``text`` as a PowerShell string that expands nothing."""
    return "'" + _PS_SINGLE_QUOTES.sub(r"\1\1", text) + "'"


def command_line(args: Sequence[str], shell: Shell) -> str:
    """A command line ``shell`` reads back as ``args`` (the first is the program)."""
    words = [quote(a, shell) for a in args]
    if shell is Shell.POWERSHELL and words and words[0] != args[0]:
        words.insert(0, "&")  # a quoted program is only a string to PowerShell without it
    return " ".join(words)


def in_folder(folder: str, command: str, shell: Shell) -> str:
    """``command`` (already quoted for ``shell``) run from ``folder``, only if it is there."""
    if shell is Shell.POWERSHELL:  # a cmdlet's argument: taken as it is, unlike a program's
        return f"Set-Location -LiteralPath {_ps_string(folder)}; if ($?) {{ {command} }}"
    where = quote(folder, shell)
    if shell is Shell.CMD:
        return f"cd /d {where} && {command}"
    return f"cd {where} && {command}"
