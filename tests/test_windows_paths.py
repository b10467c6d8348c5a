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
