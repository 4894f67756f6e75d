"""The example bot's configuration: a wrong ``REDIS_URL`` fails at once with one clear line,
an empty one means unset, and neither kills ``make demo`` (it runs its own Redis)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from arq.constants import default_queue_name

from codex_bot.config import ConfigurationError
from example_bot.main import main as main_entry
from example_bot.settings import Settings, SettingsError
from example_bot.worker import worker_settings

ARQ = Path(sys.executable).with_name("arq")


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


@pytest.mark.parametrize(
    ("environ", "host", "database"),
    [
        ({}, "localhost", 0),
        ({"REDIS_URL": ""}, "localhost", 0),
        ({"REDIS_URL": "redis://db/3"}, "db", 3),
    ],
)
def test_worker_settings_follow_redis_url(
    environ: dict[str, str], host: str, database: int
) -> None:
    settings = worker_settings(environ)
    assert (settings.redis_settings.host, settings.redis_settings.database) == (host, database)
    assert settings.queue_name == default_queue_name
    assert "redis_settings" in vars(settings)  # arq reads the class's own attributes only


@pytest.mark.parametrize("value", ["", "localhost:6379"])
def test_the_worker_module_imports_whatever_redis_url_holds(value: str) -> None:
    # the demo and the bot import it; test_the_demo_runs_and_summarises runs the demo so
    result = subprocess.run(
        [sys.executable, "-c", "import example_bot.worker"],
        env={**os.environ, "REDIS_URL": value},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_arq_worker_refuses_a_malformed_redis_url_with_one_line() -> None:
    result = subprocess.run(
        [str(ARQ), "example_bot.worker.WorkerSettings"],
        env={**os.environ, "REDIS_URL": "redis://:hunter2@localhost:port/0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("example_bot.worker: REDIS_URL='redis://***@localhost:port/0'")
    assert "hunter2" not in result.stderr


def test_health_port_is_off_unless_set() -> None:
    required = {"BOT_TOKEN": "42:X", "REDIS_URL": "redis://localhost:6379/0"}
    assert Settings.from_env(required).health_port == 0
    settings = Settings.from_env({**required, "HEALTH_PORT": "8080", "HEALTH_HOST": "127.0.0.1"})
    assert (settings.health_port, settings.health_host) == (8080, "127.0.0.1")
    with pytest.raises(SettingsError, match="HEALTH_PORT='http' is not a valid int"):
        Settings.from_env({**required, "HEALTH_PORT": "http"})
