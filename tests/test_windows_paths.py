"""The config example's advice for Windows paths holds: single-quoted TOML keeps backslashes."""

from __future__ import annotations

from pathlib import Path

from batcher.config import load_settings
from tests.helpers import REPO


def test_the_config_example_tells_windows_users_to_single_quote_paths() -> None:
    text = (REPO / "config.example.toml").read_text(encoding="utf-8")
    assert "Windows paths: use single quotes" in text and "('C:\\incident')" in text


def test_a_single_quoted_windows_path_keeps_its_backslashes(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[ledger]\ndir = 'C:\\incident\\ledgers'\n", encoding="utf-8")
    assert str(load_settings(config).ledger.dir).endswith("C:\\incident\\ledgers")


def test_the_readmes_windows_steps_name_a_marker_a_sample_and_an_extra_that_exist() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## On Windows (without make)", 1)[1].split("\n## ", 1)[0]
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'pytest -m "not posix"' in section and '"posix:' in pyproject
    assert "pip install -e .[dev]" in section and "dev = [" in pyproject
    assert "sample_inputs\\entra_risky_users.csv" in section
    assert (REPO / "sample_inputs" / "entra_risky_users.csv").is_file()
    assert "dir = 'C:\\incident\\ledgers'" in section  # the single quotes the config needs
