"""Settings precedence (CLI > env > eventspine.toml > defaults) and validation messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from eventspine.errors import ConfigError
from eventspine.settings import Settings


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray ./eventspine.toml


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_env_or_file() -> None:
    s = Settings.load({}, env={})
    assert s == Settings()
    assert s.state_dir == "./.eventspine"
    assert s.log_url is None
    assert s.log == "sqlite://.eventspine/log.db"
    assert Settings(state_dir="/var/es").log == "sqlite:///var/es/log.db"
    assert Settings(log_url="memory://").log == "memory://"
    assert s.metrics_port is None
    assert (s.latency_budget_ms, s.flush_interval_ms, s.log_level) == (20, 1000, "WARNING")


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().state_dir = "x"  # type: ignore[misc]


def test_toml_then_env_then_cli_take_precedence(tmp_path: Path) -> None:
    toml = write_toml(
        tmp_path / "conf.toml",
        'state_dir = "/from/toml"\nmetrics_port = 9000\nlatency_budget_ms = 5\nlog_level = "info"\n',
    )
    env = {"EVENTSPINE_METRICS_PORT": "9001", "EVENTSPINE_LATENCY_BUDGET_MS": "7"}
    s = Settings.load({"latency_budget_ms": "9", "state_dir": None}, env=env, toml_path=toml)
    assert s.state_dir == "/from/toml"  # only the file sets it; a None CLI value is "not given"
    assert s.metrics_port == 9001  # env beats the file
    assert s.latency_budget_ms == 9  # CLI beats env
    assert s.log_level == "INFO"  # normalized
    assert s.flush_interval_ms == 1000  # nobody set it


def test_default_toml_is_read_from_the_working_directory(tmp_path: Path) -> None:
    write_toml(tmp_path / "eventspine.toml", "flush_interval_ms = 250\n")
    assert Settings.load({}, env={}).flush_interval_ms == 250


def test_eventspine_config_names_the_file(tmp_path: Path) -> None:
    conf = write_toml(tmp_path / "other.toml", 'log_url = "memory://"\n')
    assert Settings.load({}, env={"EVENTSPINE_CONFIG": str(conf)}).log_url == "memory://"


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml' does not exist"):
        Settings.load({}, env={"EVENTSPINE_CONFIG": str(tmp_path / "nope.toml")})


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        ({"EVENTSPINE_METRICS_PORT": "http"}, ["EVENTSPINE_METRICS_PORT", "'http'", "1 to 65535"]),
        (
            {"EVENTSPINE_METRICS_PORT": "70000"},
            ["EVENTSPINE_METRICS_PORT", "'70000'", "1 to 65535"],
        ),
        ({"EVENTSPINE_LATENCY_BUDGET_MS": "0"}, ["EVENTSPINE_LATENCY_BUDGET_MS", "'0'", ">= 1"]),
        (
            {"EVENTSPINE_FLUSH_INTERVAL_MS": "1.5"},
            ["EVENTSPINE_FLUSH_INTERVAL_MS", "'1.5'", "whole number"],
        ),
        ({"EVENTSPINE_LOG_LEVEL": "loud"}, ["EVENTSPINE_LOG_LEVEL", "'loud'", "DEBUG, INFO"]),
        (
            {"EVENTSPINE_LOG_URL": "postgres://x"},
            ["EVENTSPINE_LOG_URL", "postgres://x", "sqlite:///"],
        ),
        ({"EVENTSPINE_STATE_DIR": "  "}, ["EVENTSPINE_STATE_DIR", "non-empty"]),
    ],
)
def test_invalid_env_values_name_variable_value_and_form(
    env: dict[str, str], needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load({}, env=env)
    for needle in needles:
        assert needle in str(info.value)


def test_invalid_cli_value_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"--metrics-port = '0x' is invalid; expected a TCP port"):
        Settings.load({"metrics_port": "0x"}, env={})


def test_invalid_toml_value_names_the_key(tmp_path: Path) -> None:
    toml = write_toml(tmp_path / "c.toml", "metrics_port = true\n")
    with pytest.raises(ConfigError, match=r"eventspine\.toml key 'metrics_port' = True is invalid"):
        Settings.load({}, env={}, toml_path=toml)


def test_unknown_toml_key_lists_the_accepted_keys(tmp_path: Path) -> None:
    toml = write_toml(tmp_path / "c.toml", "metric_port = 1\n")
    with pytest.raises(
        ConfigError, match="'metric_port' is unknown; the accepted keys are"
    ) as info:
        Settings.load({}, env={}, toml_path=toml)
    assert "metrics_port" in str(info.value)


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    toml = write_toml(tmp_path / "c.toml", "state_dir = \n")
    with pytest.raises(ConfigError, match="cannot be read"):
        Settings.load({}, env={}, toml_path=toml)


def test_unknown_cli_setting_is_rejected() -> None:
    with pytest.raises(ConfigError, match="setting 'colour' is unknown"):
        Settings.load({"colour": "red"}, env={})


def test_typed_cli_values_are_accepted() -> None:
    s = Settings.load({"metrics_port": 9464, "flush_interval_ms": 50}, env={})
    assert (s.metrics_port, s.flush_interval_ms) == (9464, 50)


def test_other_environment_variables_are_ignored() -> None:
    assert Settings.load({}, env={"PATH": "/bin", "EVENTSPINE_UNRELATED": "x"}) == Settings()
