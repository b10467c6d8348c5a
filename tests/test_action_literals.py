"""The action table is the only description of an action: no module outside batcher/actions/
and the simulator spells an action's name or a budget by hand to decide what to do."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from batcher.actions import ACTIONS, Budget

PACKAGE = Path(__file__).resolve().parent.parent / "batcher"
# the table itself, and the stand-in for Microsoft's cloud (it plays Graph, not batcher)
OWNERS = ("actions/", "simulator/")
# (module, function or "*"): where a budget or an old name is spelt for a reason the table
# cannot give, and why
ALLOWED = {
    ("job/session.py", "budget_specs"): "each budget meets its configured limits here",
    ("ledger/schema.py", "*"): "a released migration is history: never derived from today",
}
NAMES = {a.name for a in ACTIONS.values()} | {a.legacy for a in ACTIONS.values() if a.legacy}
WORDS = NAMES | {b.value for b in Budget}
# names no English sentence holds by chance (a hyphen, an underscore, a capital): found anywhere
# in a string; plain words (confirm, disable) only as a whole string, or after --action
DISTINCT = sorted(w for w in WORDS if not (w.isalpha() and w.islower()))
INSIDE = re.compile(
    rf"(?<![\w-])(?:{'|'.join(map(re.escape, DISTINCT))})(?![\w-])"
    rf"|--action[ =](?:{'|'.join(map(re.escape, sorted(NAMES)))})\b"
)


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of docstring constants: prose for developers, which may name actions."""
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            out.add(id(first.value))
    return out


def _nodes(node: ast.AST, function: str = "*") -> Iterator[tuple[ast.AST, str]]:
    """Every node under ``node`` with the name of the top-level function it is in ("*": none)."""
    for child in ast.iter_child_nodes(node):
        inner = function
        if function == "*" and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = child.name
        yield child, inner
        yield from _nodes(child, inner)


def spelt_by_hand(source: str, module: str) -> list[str]:
    """Where ``source`` (the module ``module``, relative to batcher/) names an action or a
    budget by hand: a string that is one, a string holding a name no sentence holds by chance
    or ``--action NAME``, or a ``Budget.MEMBER``. Docstrings are prose and are not read."""
    tree = ast.parse(source)
    prose = _docstrings(tree)
    found = []
    for node, function in _nodes(tree):
        if (module, function) in ALLOWED or (module, "*") in ALLOWED:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in prose:
                continue
            if node.value in WORDS or INSIDE.search(node.value):
                found.append(f"{module}:{node.lineno} {node.value[:60]!r}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "Budget"
        ):
            found.append(f"{module}:{node.lineno} Budget.{node.attr}")
    return found


def _modules() -> Iterator[tuple[str, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if not module.startswith(OWNERS):
            yield module, path.read_text(encoding="utf-8")


def test_no_action_name_or_budget_is_spelt_outside_the_table() -> None:
    found = [hit for module, source in _modules() for hit in spelt_by_hand(source, module)]
    assert found == []


def test_the_check_reads_the_whole_package_but_the_table_and_the_simulator() -> None:
    read = dict(_modules())
    assert "workers/per_user.py" in read and "cli/render.py" in read and "job/undo.py" in read
    assert not [m for m in read if m.startswith(("actions/", "simulator/"))]


@pytest.mark.parametrize(
    "planted",
    [
        'if back.name == "enable":\n    pass\n',
        'still = [a for a in actions if a.name == "revoke-sessions"]\n',
        'x = "revoke-sessions" in original\n',
        "budget = Budget.DIRECTORY_WRITES\n",
        "def f(b=Budget.IDENTITY_PROTECTION):\n    return b\n",
        'note = f"{n} users: revoke-sessions cannot be undone"\n',
        'hint = "run it again with --action confirm"\n',
        'kind = "directory_writes"\n',
        'old = {"confirmCompromised": 1}\n',
    ],
)
def test_a_name_or_budget_planted_in_a_real_module_is_found(planted: str) -> None:
    source = (PACKAGE / "cli" / "render.py").read_text(encoding="utf-8")
    assert spelt_by_hand(source, "cli/render.py") == []
    found = spelt_by_hand(source + "\n" + planted, "cli/render.py")
    assert len(found) == 1 and found[0].startswith("cli/render.py:")


@pytest.mark.parametrize(
    "prose",
    [
        '"""Reverse what it did (disable -> enable, revoke-sessions cannot be undone)."""\n',
        'why = "the application is disabled: enable it in Enterprise applications"\n',
        'raise E("not confirmed: nothing was sent")\n',
        'label = "contain"\n',
        "from batcher.actions import Budget\n\ndef f(b: Budget) -> Budget:\n    return b\n",
    ],
)
def test_prose_and_types_are_not_taken_for_a_name(prose: str) -> None:
    assert spelt_by_hand(prose, "job/x.py") == []


def test_the_allowed_places_are_allowed_only_there() -> None:
    specs = "def budget_specs(s):\n    return {Budget.DIRECTORY_READS: 1}\n"
    assert spelt_by_hand(specs, "job/session.py") == []
    assert spelt_by_hand(specs, "job/run.py") == ["job/run.py:2 Budget.DIRECTORY_READS"]
    elsewhere = "def caller(s):\n    return Budget.DIRECTORY_READS\n"
    assert spelt_by_hand(elsewhere, "job/session.py") == ["job/session.py:2 Budget.DIRECTORY_READS"]
