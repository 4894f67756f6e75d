"""The example bot's configuration: a wrong ``REDIS_URL`` fails at once with one clear line,
an empty one means unset, and neither kills ``make demo`` (it runs its own Redis)."""

from __future__ import annotations

import pytest

from codex_bot.config import ConfigurationError
from example_bot.main import main as main_entry
from example_bot.settings import Settings, SettingsError
from tests._helpers import import_with_redis_url


def test_settings_name_a_malformed_redis_url_without_its_password() -> None:
    env = {"BOT_TOKEN": "1:SECRET", "REDIS_URL": "redis://:hunter2@db:port/0"}
    with pytest.raises(SettingsError, match=r"^REDIS_URL='redis://\*\*\*@db:port/0' has a port"):
        Settings.from_env(env)
    with pytest.raises(ConfigurationError, match="expected redis://"):
        Settings.from_env({**env, "REDIS_URL": "localhost:6379"})


def test_settings_treat_an_empty_redis_url_as_missing() -> None:
    with pytest.raises(SettingsError, match=r"^set REDIS_URL in the environment$"):
        Settings.from_env({"BOT_TOKEN": "1:SECRET", "REDIS_URL": ""})


def test_main_exits_2_with_one_line_on_a_malformed_redis_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BOT_TOKEN", "1:SECRET")
    monkeypatch.setenv("REDIS_URL", "localhost:6379")

    assert main_entry() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("example_bot: REDIS_URL='localhost:6379' has no scheme; expected")


@pytest.mark.parametrize("value", ["", "localhost:6379"])
def test_the_worker_module_imports_whatever_redis_url_holds(value: str) -> None:
    # the demo and the bot import it; test_the_demo_runs_and_summarises runs the demo so
    result = import_with_redis_url("example_bot.worker", value)
    assert result.returncode == 0, result.stderr


def test_health_port_is_off_unless_set() -> None:
    required = {"BOT_TOKEN": "42:X", "REDIS_URL": "redis://localhost:6379/0"}
    assert Settings.from_env(required).health_port == 0
    settings = Settings.from_env({**required, "HEALTH_PORT": "8080", "HEALTH_HOST": "127.0.0.1"})
    assert (settings.health_port, settings.health_host) == (8080, "127.0.0.1")
    with pytest.raises(SettingsError, match="HEALTH_PORT='http' is not a valid int"):
        Settings.from_env({**required, "HEALTH_PORT": "http"})


@pytest.mark.parametrize("token", ["SECRET", "SECRET:1", "1:SEC RET", " 1:SECRET"])
def test_main_exits_2_with_one_line_on_a_malformed_bot_token(
    token: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # aiogram's Bot(token) would raise TokenValidationError with a traceback
    monkeypatch.setenv("BOT_TOKEN", token)
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/0")

    assert main_entry() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("example_bot: BOT_TOKEN is not a bot token"), err
    assert "SEC" not in err  # a token is a secret
