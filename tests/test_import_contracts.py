"""The declared layers (pyproject's [tool.importlinter]) hold, and each contract catches a
violating import planted in a copy of the package."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# Per contract id: the module a violating import is planted in, and the import.
PLANTED = {
    "layers": ("batcher/graph/answers.py", "batcher.graph.answers", "batcher.ledger"),
    "console": ("batcher/job/run.py", "batcher.job.run", "rich"),
    "http": ("batcher/graph/bearer.py", "batcher.graph.bearer", "polars"),
    "simulator-started-by-cli": (
        "batcher/job/session.py",
        "batcher.job.session",
        "batcher.simulator",
    ),
    "simulator-stands-apart": (
        "batcher/simulator/risky.py",
        "batcher.simulator.risky",
        "batcher.job",
    ),
}


def _config() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        config: dict[str, Any] = tomllib.load(f)["tool"]["importlinter"]
    return config


def _contracts() -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in _config()["contracts"]}


def _lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _section(output: str, name: str, names: list[str]) -> str:
    """The part of lint-imports' report on the broken contract ``name``."""
    broken = output[output.index("Broken contracts") :]
    start = broken.index(f"{name}\n")
    ends = [broken.find(f"\n{other}\n", start + 1) for other in names if other != name]
    return broken[start : min([e for e in ends if e > 0], default=len(broken))]


def test_every_contract_catches_the_import_planted_against_it(tmp_path: Path) -> None:
    assert set(PLANTED) == set(_contracts())  # a new contract gets a planted import here
    shutil.copytree(
        ROOT / "batcher", tmp_path / "batcher", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for path, _, imported in PLANTED.values():
        with (tmp_path / path).open("a", encoding="utf-8") as f:
            f.write(f"\nimport {imported}  # planted\n")

    result = _lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    names = [c["name"] for c in _contracts().values()]
    for contract_id, (_, importer, imported) in PLANTED.items():
        name = _contracts()[contract_id]["name"]
        assert f"{name} BROKEN" in result.stdout
        assert f"{importer} -> {imported}" in _section(result.stdout, name, names), contract_id


def test_the_package_as_it_is_keeps_every_contract(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "batcher", tmp_path / "batcher", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    result = _lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout
    assert f"{len(_contracts())} kept, 0 broken" in result.stdout


def test_every_module_outside_the_cli_is_barred_from_typer_and_rich() -> None:
    package = ROOT / "batcher"
    tops = {
        f"batcher.{p.stem if p.is_file() else p.name}"
        for p in package.iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").is_file()) and not p.name.startswith("_")
    }
    assert set(_contracts()["console"]["source_modules"]) == tops - {"batcher.cli"}
    started = set(_contracts()["simulator-started-by-cli"]["source_modules"])
    assert started == tops - {"batcher.cli", "batcher.simulator"}


def test_no_module_imports_a_dependency_s_private_module() -> None:
    found = []
    for path in sorted((ROOT / "batcher").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] != "batcher" and any(p.startswith("_") for p in parts[1:]):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert found == []
