"""What every ``codex-bot`` command shares: connection options, running, failing cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.exceptions import RedisError

from codex_bot.cli.params import mask
from codex_bot.ops import GroupNotChosenError, OpsError, StreamOps
from codex_bot.redis.constants import DEFAULT_STREAM

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a TCP connection before reporting Redis unreachable."""


class CommandError(click.ClickException):
    """A failure the user can fix (URL, server, stream, group): one line, exit status 2."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Target:
    """Where a command works: the Redis, the stream, the group, how to answer."""

    redis_url: str | None
    stream: str
    group: str | None
    dead_stream: str | None
    as_json: bool

    def fail(self, message: str, *urls: str | None) -> CommandError:
        """A ``CommandError`` whose message never shows a password of the URLs in play."""
        for url in (self.redis_url, *urls):
            message = mask(message, url)
        return CommandError(message)


def target_options(func: F) -> F:
    """Add ``--redis-url``, ``--stream``, ``--group``, ``--dead-stream`` and ``--json``."""
    options = [
        click.option(
            "--redis-url",
            envvar="REDIS_URL",
            show_envvar=True,
            help="Redis holding the stream, e.g. redis://:password@host:6379/0.",
        ),
        click.option(
            "--stream", default=DEFAULT_STREAM, show_default=True, help="The event stream."
        ),
        click.option("--group", help="Consumer group; default: the stream's only group."),
        click.option("--dead-stream", help="Dead-letter stream; default: <stream>:dead."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def target_of(options: dict[str, Any]) -> Target:
    """Take the target options out of a command's keyword arguments."""
    return Target(
        redis_url=options.pop("redis_url"),
        stream=options.pop("stream"),
        group=options.pop("group"),
        dead_stream=options.pop("dead_stream"),
        as_json=options.pop("as_json"),
    )


def connect(target: Target, url: str | None = None) -> Redis:
    """A client for ``url`` (default: the target's), failing with one clear line.

    Raises:
        CommandError: no URL, or one redis-py cannot parse.
    """
    url = url or target.redis_url
    if not url:
        msg = "no Redis URL: pass --redis-url or set REDIS_URL"
        raise target.fail(msg)
    try:
        client: Redis = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT)
    except ValueError as exc:
        msg = f"invalid Redis URL {url}: {exc}"
        raise target.fail(msg, url) from None
    return client


def run(target: Target, work: Callable[[StreamOps], Awaitable[T]]) -> T:
    """Connect, run ``work`` on a ``StreamOps`` for the target, and close.

    Raises:
        CommandError: Redis unreachable or refusing, or the stream or group unknown.
    """

    async def session() -> T:
        redis = connect(target)
        try:
            ops = StreamOps(
                redis, target.stream, group=target.group, dead_letter_stream=target.dead_stream
            )
            return await work(ops)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(session())
    except GroupNotChosenError as exc:
        raise target.fail(_no_group_message(exc)) from None
    except OpsError as exc:
        raise target.fail(str(exc)) from None
    except RedisError as exc:
        raise target.fail(describe_redis_error(target.redis_url, exc)) from None


def _no_group_message(exc: GroupNotChosenError) -> str:
    if not exc.known:
        return f"stream {exc.stream!r} has no consumer group"
    names = ", ".join(exc.known)
    return f"stream {exc.stream!r} has several consumer groups ({names}): pick one with --group"


def describe_redis_error(url: str | None, exc: RedisError) -> str:
    """One line on what went wrong with the Redis at ``url`` (mask it before printing)."""
    detail = str(exc).strip() or type(exc).__name__
    if isinstance(exc, redis_errors.AuthenticationError):
        return f"Redis at {url} refused the credentials: {detail}"
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return f"cannot reach Redis at {url}: {detail}"
    return f"Redis at {url} answered an error: {detail}"
