"""Test doubles for users' tests: in-memory streams, a Bot API stand-in, a throwaway Redis."""

from codex_bot.testing.bot_api import RejectedCall, SentMessage, TelegramBotAPIStandIn
from codex_bot.testing.memory import InMemoryStreamStorage, PendingEntry
from codex_bot.testing.redis_server import RedisServer, RedisServerError, find_redis_server

__all__ = [
    "InMemoryStreamStorage",
    "PendingEntry",
    "RedisServer",
    "RedisServerError",
    "RejectedCall",
    "SentMessage",
    "TelegramBotAPIStandIn",
    "find_redis_server",
]
