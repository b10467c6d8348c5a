"""Config loading: defaults, validation, and one-line errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher.config import Settings, load_settings
from batcher.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def test_example_config_is_valid_and_targets_the_simulator() -> None:
    settings = load_settings(REPO / "config.example.toml")
    assert settings.graph.target == "simulator"
    assert settings.send.batch_size == 60
    assert settings.send.rate_per_second == 1.0


def test_no_config_means_defaults() -> None:
    assert load_settings(None) == Settings()


def test_the_directory_budgets_default_to_graphs_documented_windows(tmp_path: Path) -> None:
    directory = load_settings(None).directory
    assert (directory.read_units_per_window, directory.read_window_seconds) == (3500, 10.0)
    assert (directory.writes_per_window, directory.writes_window_seconds) == (3000, 150.0)
    assert (directory.tenant_writes_per_window, directory.tenant_writes_window_seconds) == (
        18_000,
        300.0,
    )
    assert directory.writes_at_once == 16
    tuned = _load(tmp_path, "[directory]\nwrites_per_window = 1500\nwrites_at_once = 8\n")
    assert (tuned.directory.writes_per_window, tuned.directory.writes_at_once) == (1500, 8)


def test_the_old_steady_write_rate_is_refused_saying_what_to_write_instead(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "[directory]\nwrites_per_second = 20\n")
    message = str(caught.value)
    assert "\n" not in message
    assert "[directory]" in message and "writes_per_second" in message
    assert "writes_per_window = 3000" in message and "writes_window_seconds = 150" in message


def test_the_old_steady_read_rate_is_refused_saying_what_to_write_instead(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "[directory]\nreads_per_second = 100\n")
    message = str(caught.value)
    assert "\n" not in message
    assert "[directory]" in message and "reads_per_second" in message
    assert "read_units_per_window = 3500" in message and "read_window_seconds = 10" in message


def test_a_larger_tenants_read_window_is_a_setting(tmp_path: Path) -> None:
    tuned = _load(tmp_path, "[directory]\nread_units_per_window = 8000\n")
    assert (tuned.directory.read_units_per_window, tuned.directory.read_window_seconds) == (
        8000,
        10.0,
    )


def test_a_write_window_of_nothing_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[directory\] writes_window_seconds: .*greater than 0"):
        _load(tmp_path, "[directory]\nwrites_window_seconds = 0\n")


def test_unknown_key_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "[send]\nbatch_sise = 10\n")
    message = str(info.value)
    assert "[send] batch_sise" in message
    assert "did you mean 'batch_size'" in message
    assert "\n" not in message


def test_batch_size_above_graph_cap_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[send\] batch_size: .*60.*got 61"):
        _load(tmp_path, "[send]\nbatch_size = 61\n")


@pytest.mark.parametrize("name", ["china", "21Vianet", "Mooncake"])
def test_china_is_refused_because_the_api_is_not_offered_there(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="not offered in Azure China"):
        _load(tmp_path, f'[graph]\ncloud = "{name}"\n')


def test_plain_http_only_for_loopback(tmp_path: Path) -> None:
    ok = _load(tmp_path, '[graph]\nbase_url = "http://127.0.0.1:8080/"\n')
    assert ok.graph.base_url == "http://127.0.0.1:8080"
    assert _load(tmp_path, '[graph]\nbase_url = "http://[::1]:9/"\n').graph.base_url
    with pytest.raises(ConfigError, match="plain http is allowed only for loopback"):
        _load(tmp_path, '[graph]\nbase_url = "http://graph.example.com"\n')


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.toml: not valid TOML"):
        _load(tmp_path, "[send\nbatch_size = 1\n")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_simulator_fault_mix_must_be_probabilities(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="add up to at most 1"):
        _load(tmp_path, '[simulator]\nfaults = { "500" = 0.7, "503" = 0.6 }\n')


def test_example_config_documents_every_setting() -> None:
    import re

    text = (REPO / "config.example.toml").read_text(encoding="utf-8")
    sections = re.split(r"^\[(\w+)\]\s*$", text, flags=re.M)
    written = {
        name: set(re.findall(r"^#?\s*(\w+)\s*=", body, flags=re.M))
        for name, body in zip(sections[1::2], sections[2::2], strict=True)
    }
    for name, field in Settings.model_fields.items():
        model = field.annotation
        assert model is not None
        missing = set(model.model_fields) - written.get(name, set())
        assert not missing, f"[{name}] not in config.example.toml: {sorted(missing)}"


def test_a_directory_file_is_read_from_toml_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "users.json").write_text('[{"userPrincipalName": "ann@contoso.com"}]')
    config = tmp_path / "config.toml"
    config.write_text('[simulator]\ndirectory_file = "users.json"\n', encoding="utf-8")
    settings = load_settings(config)
    assert settings.simulator.directory_file == tmp_path / "users.json"
    from batcher.simulator import GraphSimulator

    assert [u.userPrincipalName for u in GraphSimulator(settings.simulator).directory] == [
        "ann@contoso.com"
    ]
