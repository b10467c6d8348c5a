"""The code's shape, checked: module length, parameter counts, docstrings, who prints, who
calls the OS, who knows Graph's endpoints."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "batcher"
MODULES = sorted(PACKAGE.rglob("*.py"))
# the modules that render for a person: they are given a console by the CLI
RENDERERS = {"cli"}
# the modules that know Graph's paths: the action table, the client, the stand-in
ENDPOINT_OWNERS = {"actions", "graph", "simulator"}
POSIX_ONLY_CALLS = {
    ("os", "fchmod"),
    ("os", "kill"),
    ("os", "killpg"),
    ("os", "getuid"),
    ("os", "geteuid"),
    ("os", "setsid"),
    ("os", "fork"),
    ("signal", "SIGKILL"),
    ("signal", "SIGHUP"),
    ("signal", "signal"),
    ("anyio", "open_signal_receiver"),
}
OS_MODULES = {"fcntl", "msvcrt", "termios", "tty", "pwd", "grp", "resource", "winreg"}
GRAPH_PATHS = ("/identityProtection", "/$batch", "/users", "/riskyUsers")


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _in(path: Path, places: set[str]) -> bool:
    name = _name(path)
    return any(name == p or name.startswith(p + "/") for p in places)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _is_cli_command(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A typer command takes one parameter per option, and is exempt."""
    return any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command"
        for d in func.decorator_list
    )


def test_the_package_is_where_the_tests_look() -> None:
    assert len(MODULES) > 50 and (PACKAGE / "actions" / "__init__.py") in MODULES


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_each_module_is_at_most_450_lines_and_opens_with_a_one_line_docstring(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 450, f"{_name(path)}: {len(lines)} lines; split it by responsibility"
    doc = ast.get_docstring(_tree(path))
    assert doc, f"{_name(path)}: no docstring saying its job"
    assert doc.splitlines()[0].strip(), f"{_name(path)}: the docstring's first line is empty"


def test_no_function_takes_more_than_7_parameters() -> None:
    over = []
    for path in MODULES:
        for func in _functions(_tree(path)):
            if _is_cli_command(func):
                continue
            a = func.args
            names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
            names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
            count = len([n for n in names if n not in ("self", "cls")])
            if count > 7:
                over.append(f"{_name(path)}:{func.lineno} {func.name} takes {count}")
    assert over == []


def test_the_library_never_prints() -> None:
    """Only the CLI and the renderers it hands a console to write to the terminal (the
    platform seam reads the prompt's answer for the CLI, and writes through its callback)."""
    found = []
    for path in MODULES:
        if _in(path, RENDERERS):
            continue
        reads = _name(path) == "platform.py"
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "print" or (node.func.id == "input" and not reads):
                    found.append(f"{_name(path)}:{node.lineno} {node.func.id}()")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                streams = ("stdout", "stderr") if reads else ("stdout", "stderr", "stdin")
                if node.value.id == "sys" and node.attr in streams:
                    found.append(f"{_name(path)}:{node.lineno} sys.{node.attr}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rich"):
                found.append(f"{_name(path)}:{node.lineno} imports {node.module}")
    assert found == []


def test_os_specific_calls_live_in_the_platform_module_alone() -> None:
    found = []
    for path in MODULES:
        if _name(path) == "platform.py":
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id, node.attr) in POSIX_ONLY_CALLS:
                    found.append(f"{_name(path)}:{node.lineno} {node.value.id}.{node.attr}")
            elif isinstance(node, ast.Import):
                found += [
                    f"{_name(path)}:{node.lineno} import {a.name}"
                    for a in node.names
                    if a.name in OS_MODULES
                ]
            elif isinstance(node, ast.ImportFrom) and node.module in OS_MODULES:
                found.append(f"{_name(path)}:{node.lineno} from {node.module}")
    assert found == []


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of docstring constants (they may name endpoints in prose)."""
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            out.add(id(first.value))
    return out


def test_only_the_action_table_the_graph_client_and_the_simulator_know_graphs_paths() -> None:
    found = []
    for path in MODULES:
        if _in(path, ENDPOINT_OWNERS):
            continue
        tree = _tree(path)
        prose = _docstrings(tree)
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) else None
            if (
                isinstance(text, str)
                and id(node) not in prose
                and any(p in text for p in GRAPH_PATHS)
            ):
                found.append(f"{_name(path)}:{node.lineno} {node.value[:60]!r}")
    assert found == []


def test_one_word_for_a_step_graph_may_have_applied_unknown_everywhere() -> None:
    """The summary, status, report, JSON and README all say "unknown", never "unsure"."""
    readme = PACKAGE.parent / "README.md"
    said = [p for p in (*MODULES, readme) if "unsure" in p.read_text(encoding="utf-8").lower()]
    assert said == []
    assert "unknown" in (PACKAGE / "ledger" / "states.py").read_text(encoding="utf-8")


def test_the_readmes_module_table_names_every_top_level_module() -> None:
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    top = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    unnamed = sorted(m for m in top - {"__init__", "__main__"} if f"`batcher/{m}" not in readme)
    assert not unnamed, f"README 'How it is built' names no row for: {', '.join(unnamed)}"
