"""The tests that need POSIX (a pty, resource limits, POSIX signals, fcntl, /bin/sh) say so
with the ``posix`` marker, which Windows deselects; every other test runs there too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
NEEDS_POSIX = [
    re.compile(p)
    for p in (
        r"send_signal\(",
        r"\b_terminal\(",
        r"\bPtyProcess\(",
        r"\bresource\.",
        r"\bfcntl\.",
        r"/bin/sh",
        r"\bSIGKILL\b",
        r"preexec_fn",
    )
]


def _marks_posix(node: ast.expr) -> bool:
    return "mark.posix" in ast.unparse(node)


def _posix_module(tree: ast.Module) -> bool:
    return any(
        isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
        and _marks_posix(n.value)
        for n in tree.body
    )


def test_every_test_that_needs_posix_is_marked_posix() -> None:
    unmarked = []
    for path in sorted(TESTS.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        if _posix_module(tree):
            continue
        lines = source.splitlines()
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            body = "\n".join(lines[node.lineno - 1 : node.end_lineno])  # its lines, at once
            needs = [p.pattern for p in NEEDS_POSIX if p.search(body)]
            if needs and not any(_marks_posix(d) for d in node.decorator_list):
                unmarked.append(f"{path.name}::{node.name} uses {', '.join(needs)}")
    assert unmarked == []


def test_the_posix_marker_is_registered_with_its_reason(pytestconfig: pytest.Config) -> None:
    markers = pytestconfig.getini("markers")
    assert any(m.startswith("posix: needs POSIX: a pseudo-terminal (pty)") for m in markers)
