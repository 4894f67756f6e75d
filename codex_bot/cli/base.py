"""What every ``codex-bot`` command shares: connection options, running, failing cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from codex_bot.cli.params import mask
from codex_bot.config import redis_url_problem
from codex_bot.ops import (
    GroupNotChosenError,
    OpsError,
    PartitionedOps,
    StreamNotFoundError,
    StreamOps,
)
from codex_bot.ops.replies import command
from codex_bot.redis.constants import DEFAULT_STREAM
from codex_bot.redis.partitioning import check_partitioned_name, partition_stream
from codex_bot.redis.types import AnyRedis

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a TCP connection before reporting Redis unreachable."""
DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for Redis to answer a command (``--timeout``) before reporting it."""

Ops = StreamOps | PartitionedOps
"""What a command works on: one stream, or every partition of a partitioned one."""


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
    cluster: bool = False
    partitions: int | None = None
    timeout: float = DEFAULT_TIMEOUT

    def fail(self, message: str, *urls: str | None) -> CommandError:
        """A ``CommandError`` whose message never shows a password of the URLs in play."""
        for url in (self.redis_url, *urls):
            message = mask(message, url)
        return CommandError(message)


def target_options(func: F) -> F:
    """Add ``--redis-url``, ``--cluster``, ``--stream``, ``--partitions``, ``--group``,
    ``--dead-stream``, ``--json`` and ``--timeout``."""
    options = [
        click.option(
            "--redis-url",
            envvar="REDIS_URL",
            show_envvar=True,
            help="Redis holding the stream, e.g. redis://:password@host:6379/0.",
        ),
        click.option(
            "--cluster",
            is_flag=True,
            help="The URL is a node of a Redis Cluster (the stream needs a hash tag).",
        ),
        click.option(
            "--stream", default=DEFAULT_STREAM, show_default=True, help="The event stream."
        ),
        click.option(
            "--partitions",
            type=click.IntRange(1),
            help="The stream is partitioned ({<stream>:p0} ...): work on all N partitions.",
        ),
        click.option("--group", help="Consumer group; default: the stream's only group."),
        click.option("--dead-stream", help="Dead-letter stream; default: <stream>:dead."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
        click.option(
            "--timeout",
            type=click.FloatRange(0, min_open=True),
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="Seconds to wait for Redis to answer a command.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_TARGET_NAMES = (
    "redis_url",
    "cluster",
    "stream",
    "partitions",
    "group",
    "dead_stream",
    "as_json",
    "timeout",
)


def remember_target(options: dict[str, Any]) -> None:
    """Keep the target options given before the command (``codex-bot --stream s stats``)."""
    ctx = click.get_current_context()
    ctx.obj = {
        name: options[name]
        for name in _TARGET_NAMES
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }


def target_of(options: dict[str, Any]) -> Target:
    """Take the target options out of a command's keyword arguments.

    An option given after the command wins; one given before it (to ``codex-bot`` itself)
    comes next; then the environment and the defaults.
    """
    ctx = click.get_current_context()
    before: dict[str, Any] = ctx.find_root().obj or {}
    for name in _TARGET_NAMES:
        given_here = ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
        if name in before and not given_here:
            options[name] = before[name]
    target = Target(
        redis_url=options.pop("redis_url"),
        stream=options.pop("stream"),
        group=options.pop("group"),
        dead_stream=options.pop("dead_stream"),
        as_json=options.pop("as_json"),
        cluster=options.pop("cluster"),
        partitions=options.pop("partitions"),
        timeout=options.pop("timeout"),
    )
    if target.partitions is not None:
        try:
            check_partitioned_name(target.stream, target.partitions)
        except ValueError as exc:
            raise target.fail(str(exc)) from None
        if target.dead_stream is not None:
            msg = "--dead-stream does not go with --partitions: each partition has its own"
            raise target.fail(msg)
    return target


def connect(target: Target, url: str | None = None, *, cluster: bool | None = None) -> AnyRedis:
    """A client for ``url`` (default: the target's), failing with one clear line.

    Args:
        target: The command's target.
        url: Another Redis than the target's (arq's).
        cluster: A ``RedisCluster`` client; default: the target's ``--cluster``.

    Raises:
        CommandError: no URL, or one redis-py cannot parse.
    """
    url = url or target.redis_url
    if not url:
        msg = "no Redis URL: pass --redis-url or set REDIS_URL"
        raise target.fail(msg)
    # redis-py reads some malformed URLs silently otherwise ("/abc" as database 0)
    if problem := redis_url_problem(url):
        msg = f"invalid Redis URL {url}: {problem}"
        raise target.fail(msg, url)
    try:
        kind = RedisCluster if (target.cluster if cluster is None else cluster) else Redis
        client: AnyRedis = kind.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=target.timeout
        )
    except (ValueError, RedisClusterException) as exc:
        msg = f"invalid Redis URL {url}: {exc}"
        raise target.fail(msg, url) from None
    return client


def operations(target: Target, redis: AnyRedis) -> Ops:
    """``StreamOps`` for the target's stream, or ``PartitionedOps`` with ``--partitions``."""
    if target.partitions is not None:
        return PartitionedOps(redis, target.stream, target.partitions, group=target.group)
    return StreamOps(
        redis, target.stream, group=target.group, dead_letter_stream=target.dead_stream
    )


def run(target: Target, work: Callable[[Ops], Awaitable[T]]) -> T:
    """Connect, run ``work`` on the target's operations (see ``operations``), and close.

    Raises:
        CommandError: Redis unreachable or refusing, or the stream or group unknown.
    """

    async def session() -> T:
        redis = connect(target)
        try:
            if target.partitions is not None:
                await _warn_of_more_partitions(redis, target.stream, target.partitions)
            try:
                return await work(operations(target, redis))
            except StreamNotFoundError as exc:
                raise OpsError(await _not_found_message(target, redis, exc)) from None
        finally:
            await redis.aclose()

    try:
        return asyncio.run(session())
    except GroupNotChosenError as exc:
        raise target.fail(_no_group_message(exc)) from None
    except OpsError as exc:
        raise target.fail(str(exc)) from None
    except (RedisError, RedisClusterException) as exc:
        raise target.fail(describe_redis_error(target.redis_url, exc)) from None


async def _warn_of_more_partitions(redis: AnyRedis, stream: str, partitions: int) -> None:
    """Say so on stderr when partition N exists with ``--partitions N``: the rest is unseen."""
    beyond = partition_stream(stream, partitions)
    if await command(redis, "EXISTS", beyond, key=beyond):
        click.echo(
            f"warning: {beyond} exists too, so stream {stream!r} has more than {partitions} "
            "partitions; the others are not shown or changed: pass the bot's number of "
            "partitions",
            err=True,
        )


async def _not_found_message(target: Target, redis: AnyRedis, exc: StreamNotFoundError) -> str:
    """The error, with a hint when the stream is missing because it is partitioned."""
    stream = target.stream
    if target.partitions is not None or exc.stream != stream or "{" in stream or "}" in stream:
        return str(exc)
    first = partition_stream(stream, 0)
    if not await command(redis, "EXISTS", first, key=first):
        return str(exc)
    return f"{exc}, but {first} does: it is partitioned, pass --partitions N"


def _no_group_message(exc: GroupNotChosenError) -> str:
    if not exc.known:
        return f"stream {exc.stream!r} has no consumer group"
    names = ", ".join(exc.known)
    return f"stream {exc.stream!r} has several consumer groups ({names}): pick one with --group"


def describe_redis_error(url: str | None, exc: RedisError | RedisClusterException) -> str:
    """One line on what went wrong with the Redis at ``url`` (mask it before printing)."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, RedisClusterException):
        return f"cannot use the Redis Cluster at {url}: {detail}"
    if isinstance(exc, redis_errors.AuthenticationError):
        return f"Redis at {url} refused the credentials: {detail}"
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return f"cannot reach Redis at {url}: {detail}"
    if isinstance(exc, redis_errors.MovedError) or detail.startswith("MOVED"):
        return f"Redis at {url} is a node of a Redis Cluster (pass --cluster): {detail}"
    return f"Redis at {url} answered an error: {detail}"
