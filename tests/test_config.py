"""``codex_bot.config``: a Redis URL from the environment, checked, with one clear error."""

from __future__ import annotations

import pytest
from arq.connections import RedisSettings
from redis.asyncio import Redis

from codex_bot.config import (
    ConfigurationError,
    check_redis_url,
    mask_password,
    redis_url_from_env,
)
from codex_bot.redis import CodexBotError

VALID = [
    "redis://localhost",
    "redis://localhost:6379",
    "redis://localhost:6379/2",
    "redis://:s3cret@db.internal:6380/0",
    "redis://bot:s3cret@db.internal:6380/15",
    "REDIS://localhost:6379/0",
    "rediss://bot:s3cret@managed.example.com:25061/0",
    "redis://localhost:6379?db=3",
    "unix:///run/redis/redis.sock",
    "unix://:s3cret@/run/redis/redis.sock?db=1",
]
MALFORMED = {
    "localhost:6379": "has no scheme",
    "localhost": "has no scheme",
    "http://localhost:6379": "has the scheme 'http'",
    "redis://localhost:port": "has a port that is not a number from 0 to 65535",
    "redis://localhost:99999": "has a port that is not a number from 0 to 65535",
    "redis://localhost:6379/zero": "has a database number that is not a number",
    "redis://localhost:6379/2/": "has a database number that is not a number",
    "redis://localhost:6379?db=x": "has a database number that is not a number",
    "unix://": "names no socket path",
}


@pytest.mark.parametrize("url", VALID)
async def test_a_valid_url_is_returned_and_both_redis_py_and_arq_accept_it(url: str) -> None:
    checked = redis_url_from_env(environ={"REDIS_URL": url})
    assert checked == url
    RedisSettings.from_dsn(url)
    await Redis.from_url(url).aclose()  # parses the URL; connects on first command only


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_or_empty_means_not_given(value: str | None) -> None:
    environ = {} if value is None else {"REDIS_URL": value}
    assert redis_url_from_env(environ=environ) is None
    assert redis_url_from_env(default="redis://cache:6379/1", environ=environ) == (
        "redis://cache:6379/1"
    )


@pytest.mark.parametrize(("url", "problem"), MALFORMED.items())
def test_a_malformed_url_fails_with_one_line_naming_the_variable(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        redis_url_from_env("CACHE_URL", environ={"CACHE_URL": url})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"CACHE_URL={url!r} {problem}; expected redis://")
    assert "redis://[[user]:password@]host[:port][/db]" in message
    assert "rediss://" in message
    assert "unix://" in message
    assert isinstance(caught.value, CodexBotError)


@pytest.mark.parametrize(
    "url",
    [
        ":s3cret@localhost:6379",
        "redis://:s3cret@localhost:port",
        "redis://bot:s3cret@db/zero",
        "redis://:pa/s3cret@db:6379",
        "http://u:s3cret@db",
        "redis://db:6379/x?password=s3cret",
    ],
)
def test_the_error_never_shows_a_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_redis_url(url)
    assert "s3cret" not in str(caught.value)
    assert "***" in str(caught.value)


def test_mask_password() -> None:
    assert mask_password("redis://bot:s3cret@db:6379/0") == "redis://***@db:6379/0"
    assert mask_password("redis://:p@ss@db:6379/0") == "redis://***@db:6379/0"
    assert mask_password(":s3cret@db") == "***@db"
    assert mask_password("redis://db:6379/0") == "redis://db:6379/0"
    assert mask_password("redis://db?password=s3cret&db=1") == "redis://db?password=***&db=1"


def test_a_path_without_a_database_number_is_dropped_for_arq() -> None:
    assert check_redis_url("redis://:pw@localhost:6379/") == "redis://:pw@localhost:6379"
    RedisSettings.from_dsn(check_redis_url("redis://localhost:6379//"))


def test_a_url_python_cannot_split_fails_with_one_line() -> None:
    with pytest.raises(ConfigurationError) as caught:
        redis_url_from_env("REDIS_URL", environ={"REDIS_URL": "redis://:s3cret@[::1:6379/0"})
    message = str(caught.value)
    assert message.startswith("REDIS_URL='redis://***@[::1:6379/0' is not a valid URL")
    assert "s3cret" not in message
