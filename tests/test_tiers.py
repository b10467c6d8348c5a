"""The two test tiers stay as the README defines them: a test that starts the real ``batcher``
command (directly or through one of its module's helpers) is marked ``e2e``, so that
``make test-fast`` stays in-process."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
STARTS_THE_CLI = re.compile(r"\brun_cli\(|\bBATCHER\b|\bPtyProcess\(")


def _marks_e2e(node: ast.expr) -> bool:
    return "mark.e2e" in ast.unparse(node)


def _e2e_module(tree: ast.Module) -> bool:
    return any(
        isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
        and _marks_e2e(n.value)
        for n in tree.body
    )


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def _starting_the_cli(source: str, tree: ast.Module) -> set[str]:
    """The module's functions that start the CLI, themselves or through another of them."""
    lines = source.splitlines()
    functions = _functions(tree)
    bodies = {name: "\n".join(lines[f.lineno - 1 : f.end_lineno]) for name, f in functions.items()}
    found = {name for name, body in bodies.items() if STARTS_THE_CLI.search(body)}
    while True:
        more = {
            name
            for name, body in bodies.items()
            if name not in found and any(re.search(rf"\b{h}\(", body) for h in found)
        }
        if not more:
            return found
        found |= more


def test_every_test_that_starts_the_real_cli_is_marked_e2e() -> None:
    unmarked = []
    for path in sorted(TESTS.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        if _e2e_module(tree):
            continue
        functions = _functions(tree)
        for name in sorted(_starting_the_cli(source, tree)):
            node = functions[name]
            if name.startswith("test_") and not any(_marks_e2e(d) for d in node.decorator_list):
                unmarked.append(f"{path.name}::{name}")
    assert unmarked == []


def test_the_check_finds_a_test_that_starts_the_cli_through_a_helper() -> None:
    source = (
        "def _run(tmp):\n    return run_cli('status', cwd=tmp)\n\n"
        "def _twice(tmp):\n    return _run(tmp), _run(tmp)\n\n"
        "def test_a(tmp):\n    _twice(tmp)\n\n"
        "def test_b(tmp):\n    assert tmp\n"
    )
    assert _starting_the_cli(source, ast.parse(source)) == {"_run", "_twice", "test_a"}
