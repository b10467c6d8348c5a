"""Printed commands, quoted for the shell they are pasted into: POSIX sh (run here for real),
cmd and PowerShell (their exact text; cmd's also read back through a model of cmd and of the
C runtime's argument splitting), and which shell the platform picks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batcher.job.status import status
from batcher.ledger import Ledger, RunRecord, RunScope
from batcher.platform import shell
from batcher.shells import Shell, command_line, in_folder, quote

TRICKY = [
    "my ids.csv",
    'say "hi"',
    "a&b|c<d>e",
    "50%",
    "%PATH%",
    "$HOME",
    "`date`",
    "it's",
    "Zoë Ørsted.csv",
    "(x)!^",
    "C:\\my dir\\",
    "C:\\ids.csv",
    "",
]
PROGRAM = "C:\\Program Files\\batcher\\batcher.exe"


def _crt_split(line: str) -> list[str]:
    """How a Windows program's C runtime splits its command line into arguments."""
    args: list[str] = []
    i, quoted, current, started = 0, False, "", False
    while i < len(line):
        c = line[i]
        if c == "\\":
            n = len(line[i:]) - len(line[i:].lstrip("\\"))
            if i + n < len(line) and line[i + n] == '"':
                current += "\\" * (n // 2)
                if n % 2:
                    current += '"'
                    i += n + 1
                else:
                    i += n
                started = True
                continue
            current += "\\" * n
            i += n
            started = True
            continue
        if c == '"':
            quoted, started = not quoted, True
        elif c in " \t" and not quoted:
            if started:
                args.append(current)
            current, started = "", False
        else:
            current, started = current + c, True
        i += 1
    if started:
        args.append(current)
    return args


def _cmd_reads(line: str) -> str:
    """What cmd hands the program: ``^x`` outside quotes is x; it refuses (AssertionError)
    anything it would act on: ``%`` it could expand, and ``& | < >`` outside quotes."""
    out, quoted, i = "", False, 0
    while i < len(line):
        c = line[i]
        if c == "%":  # an escaped one (^%) is taken below, with its caret
            raise AssertionError(f"cmd may expand % in {line!r}")
        if c == '"':
            quoted = not quoted
        elif c == "^" and not quoted:
            i += 1
            c = line[i]
        elif c in "&|<>" and not quoted:
            raise AssertionError(f"cmd acts on {c!r} in {line!r}")
        out += c
        i += 1
    return out


def _cmd_args(line: str) -> list[str]:
    text = _cmd_reads(line)
    assert text.startswith(f'"{PROGRAM}" ')
    return _crt_split(text[len(PROGRAM) + 3 :])


@pytest.mark.posix
def test_a_posix_command_runs_in_sh_with_every_argument_as_it_was() -> None:
    show = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]
    line = command_line([*show, *TRICKY, "two\nlines"], Shell.POSIX)
    got = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, check=True)
    assert json.loads(got.stdout) == [*TRICKY, "two\nlines"]


def test_a_posix_command_from_another_folder_goes_there_first() -> None:
    assert in_folder("/srv/my cases", "batcher run ids.csv", Shell.POSIX) == (
        "cd '/srv/my cases' && batcher run ids.csv"
    )


def test_cmd_reads_every_argument_back_as_it_was() -> None:
    for arg in TRICKY:
        line = command_line([PROGRAM, "run", arg], Shell.CMD)
        assert _cmd_args(line) == ["run", arg], line


@pytest.mark.parametrize(
    ("arg", "typed"),
    [
        ("ids.csv", "ids.csv"),
        ("my ids.csv", '"my ids.csv"'),
        ("a&b", '"a&b"'),  # inside cmd's quotes & is text
        ("$HOME", '"$HOME"'),
        ("`date`", '"`date`"'),
        ("Zoë.csv", '"Zoë.csv"'),
        ("50%", '^"50^%^"'),  # % expands even in quotes: every special character escaped
        ('say "hi" & go', '^"say \\^"hi\\^" ^& go^"'),
        ("C:\\my dir\\", '"C:\\my dir\\\\"'),
        ("", '""'),
    ],
)
def test_cmd_quoting(arg: str, typed: str) -> None:
    assert quote(arg, Shell.CMD) == typed


def test_a_cmd_command_from_another_folder_changes_drive_too() -> None:
    assert in_folder("D:\\my cases", "batcher run ids.csv", Shell.CMD) == (
        'cd /d "D:\\my cases" && batcher run ids.csv'
    )


@pytest.mark.parametrize(
    ("arg", "typed"),
    [
        ("ids.csv", "ids.csv"),
        ("my ids.csv", "'my ids.csv'"),
        ("a&b", "'a&b'"),
        ("50%", "'50%'"),
        ("$HOME", "'$HOME'"),  # single quotes expand nothing
        ("`date`", "'`date`'"),
        ("Zoë.csv", "'Zoë.csv'"),
        ("it's", "'it''s'"),
        ("--config=c.toml", "'--config=c.toml'"),  # bare, PowerShell would split it at the dot
        ("--yes", "--yes"),
        ("it\u2019s", "'it\u2019\u2019s'"),  # PowerShell takes typographic quotes as quotes too
        ('say "hi"', "'say \\\"hi\\\"'"),  # Windows PowerShell 5.1 passes " on unescaped
        ("C:\\my dir\\", "'C:\\my dir\\\\'"),  # 5.1 wraps it in quotes: \" would end it
        ("", "'\"\"'"),  # 5.1 drops an empty argument
    ],
)
def test_powershell_quoting(arg: str, typed: str) -> None:
    assert quote(arg, Shell.POWERSHELL) == typed


def test_powershell_runs_a_quoted_program_with_the_call_operator() -> None:
    assert command_line([PROGRAM, "status", "a b.sqlite"], Shell.POWERSHELL) == (
        f"& '{PROGRAM}' status 'a b.sqlite'"
    )
    assert command_line(["batcher", "status", "a.sqlite"], Shell.POWERSHELL) == (
        "batcher status a.sqlite"
    )


def test_a_powershell_command_from_another_folder_has_no_and_and() -> None:
    line = in_folder("C:\\it's here", "batcher run ids.csv", Shell.POWERSHELL)
    assert line == "Set-Location -LiteralPath 'C:\\it''s here'; if ($?) { batcher run ids.csv }"
    assert "&&" not in line


def test_every_shell_leaves_a_plain_command_as_it_is() -> None:
    for sh in Shell:
        assert command_line(["batcher", "run", "--yes", "ids.csv"], sh) == (
            "batcher run --yes ids.csv"
        )


@pytest.mark.parametrize(
    ("env", "windows", "chosen"),
    [
        ({}, False, Shell.POSIX),
        ({"PROMPT": "$P$G"}, False, Shell.POSIX),
        ({"BATCHER_SHELL": "PowerShell"}, False, Shell.POWERSHELL),
        ({"BATCHER_SHELL": "cmd"}, True, Shell.CMD),
        ({"BATCHER_SHELL": "fish"}, False, Shell.POSIX),  # not one of the three: the rule
        ({"MSYSTEM": "MINGW64", "PROMPT": "$P$G"}, True, Shell.POSIX),  # Git Bash
        (
            {
                "USERPROFILE": "C:\\Users\\ana",
                "PSModulePath": "C:\\Users\\ana\\Documents\\WindowsPowerShell\\Modules;"
                "C:\\Program Files\\WindowsPowerShell\\Modules",
                "PROMPT": "$P$G",  # PowerShell started from cmd keeps cmd's PROMPT
            },
            True,
            Shell.POWERSHELL,
        ),
        (
            {
                "USERPROFILE": "C:\\Users\\ana",
                "PSModulePath": "C:\\Program Files\\WindowsPowerShell\\Modules",
                "PROMPT": "$P$G",
            },
            True,
            Shell.CMD,
        ),
        ({"USERPROFILE": "C:\\Users\\ana"}, True, Shell.POWERSHELL),  # the default
    ],
)
def test_the_shell_is_chosen_by_the_documented_rule(
    env: dict[str, str], windows: bool, chosen: Shell
) -> None:
    assert shell(env, windows=windows) is chosen


def test_the_cmd_model_refuses_what_cmd_would_act_on() -> None:
    """The model above is strict: it catches quoting that cmd would break."""
    for broken in ['"x" & y', '"50%"', "a|b"]:
        with pytest.raises(AssertionError):
            _cmd_reads(broken)


def test_status_says_how_to_resume_in_the_users_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "incident.sqlite"
    identity = RunScope(actions=("confirm",), tenant="t", cloud="global", api_version="v1.0")
    book = Ledger.open(ledger, identity)
    book.begin_run(
        RunRecord("run", "d" * 64, command_line="batcher run ids.csv", cwd="C:\\it's here")
    )
    book.close()  # the run never ended: status offers to resume it
    monkeypatch.setenv("BATCHER_SHELL", "powershell")
    assert status(ledger).resume == (
        "Set-Location -LiteralPath 'C:\\it''s here'; if ($?) { batcher run ids.csv }"
    )
    monkeypatch.setenv("BATCHER_SHELL", "cmd")
    assert status(ledger).resume == 'cd /d "C:\\it\'s here" && batcher run ids.csv'
