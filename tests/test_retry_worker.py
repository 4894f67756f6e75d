"""``arq codex_bot.retry_worker.WorkerSettings``: configured from the environment, one clear
line for a wrong value, and the JSON serializers the bot's pool uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from arq.constants import default_queue_name

from codex_bot.config import ConfigurationError
from codex_bot.redis import json_job_deserializer, json_job_serializer, redeliver_event
from codex_bot.retry_worker import worker_settings
from tests._helpers import import_with_redis_url

ARQ = Path(sys.executable).with_name("arq")


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
    assert settings.functions == [redeliver_event]
    assert settings.job_serializer is json_job_serializer
    assert settings.job_deserializer is json_job_deserializer
    assert settings.max_tries == 30


def test_worker_settings_take_the_queue_max_tries_and_a_streams_redis() -> None:
    settings = worker_settings(
        {"ARQ_QUEUE": "bot:retries", "RETRY_MAX_TRIES": "7", "STREAMS_REDIS_URL": "redis://s/1"}
    )
    assert settings.queue_name == "bot:retries"
    assert settings.max_tries == 7
    assert callable(settings.on_startup)
    assert callable(settings.on_shutdown)


@pytest.mark.parametrize("value", ["0", "many", "-3"])
def test_a_bad_max_tries_is_named(value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"RETRY_MAX_TRIES={value!r}"):
        worker_settings({"RETRY_MAX_TRIES": value})


@pytest.mark.parametrize("value", ["", "localhost:6379"])
def test_the_module_imports_whatever_redis_url_holds(value: str) -> None:
    result = import_with_redis_url("codex_bot.retry_worker", value)
    assert result.returncode == 0, result.stderr


def test_arq_refuses_a_malformed_redis_url_with_one_line() -> None:
    result = subprocess.run(
        [str(ARQ), "codex_bot.retry_worker.WorkerSettings"],
        env={**os.environ, "REDIS_URL": "redis://:hunter2@localhost:port/0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        "codex_bot.retry_worker: REDIS_URL='redis://***@localhost:port/0'"
    )
    assert "hunter2" not in result.stderr
