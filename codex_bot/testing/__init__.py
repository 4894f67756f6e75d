"""Test doubles for users' tests: in-memory streams, a Bot API stand-in, throwaway Redis
servers (one server, a Redis Cluster, a primary with replicas and Sentinels).

The Bot API stand-in loads aiogram and aiohttp, so it is imported on first use: a test
that only needs ``RedisServer`` or ``InMemoryStreamStorage`` does not pay for them.
"""

from typing import TYPE_CHECKING, Any

from codex_bot.testing.cluster import ClusterShard, RedisClusterServer
from codex_bot.testing.cluster_node import ClusterNode
from codex_bot.testing.memory import InMemoryStreamStorage, PendingEntry
from codex_bot.testing.process import ServerProcess
from codex_bot.testing.redis_server import (
    RedisBinary,
    RedisServer,
    RedisServerError,
    find_redis_server,
    redis_server_binaries,
    redis_server_version,
)
from codex_bot.testing.sentinel import RedisSentinelServer

if TYPE_CHECKING:
    from codex_bot.testing.bot_api import RejectedCall, SentMessage, TelegramBotAPIStandIn

_BOT_API = frozenset({"RejectedCall", "SentMessage", "TelegramBotAPIStandIn"})


def __getattr__(name: str) -> Any:
    if name in _BOT_API:
        from codex_bot.testing import bot_api  # noqa: PLC0415 - loads aiogram on first use

        return getattr(bot_api, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "ClusterNode",
    "ClusterShard",
    "InMemoryStreamStorage",
    "PendingEntry",
    "RedisBinary",
    "RedisClusterServer",
    "RedisSentinelServer",
    "RedisServer",
    "RedisServerError",
    "RejectedCall",
    "SentMessage",
    "ServerProcess",
    "TelegramBotAPIStandIn",
    "find_redis_server",
    "redis_server_binaries",
    "redis_server_version",
]
