"""codex_bot in one file: BOT_TOKEN=... REDIS_URL=... python -m example_bot.minimal"""

import asyncio
import os
import sys
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.utils.token import TokenValidationError, validate_token
from dependency_injector import containers, providers
from redis.asyncio import Redis

from codex_bot.config import ConfigurationError, redis_url_from_env
from codex_bot.lifecycle import setup_redis_events
from codex_bot.redis import (
    BotRedisDispatcher,
    RedisRouter,
    RedisStreamProcessor,
    RedisStreamStorage,
)
from codex_bot.telegram import RateLimitMiddleware


class Container(containers.DeclarativeContainer):
    bot = providers.Dependency(instance_of=Bot)


redis_router = RedisRouter()


@redis_router.message("notification.created")
async def notify(payload: dict[str, Any], container: Container) -> None:
    await container.bot().send_message(payload["chat_id"], payload["text"])


def build(bot: Bot, redis: Redis) -> Dispatcher:
    bot.session.middleware(RateLimitMiddleware(redis))  # Telegram's limits, for all replicas
    storage = RedisStreamStorage(redis)
    processor = RedisStreamProcessor(storage, "bot_events", "my_bot", f"my_bot-{os.getpid()}")
    events = BotRedisDispatcher()
    events.include_router(redis_router)
    dp = Dispatcher()
    setup_redis_events(dp, processor, redis_dispatcher=events, container=Container(bot=bot))
    return dp


async def run(token: str, redis_url: str) -> None:
    bot = Bot(token)
    async with Redis.from_url(redis_url) as redis:
        await build(bot, redis).start_polling(bot)


def main() -> int:
    try:
        redis_url = redis_url_from_env()  # unset or empty: None; malformed: one clear line
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    token = os.environ.get("BOT_TOKEN")
    if not token or not redis_url:
        print("set BOT_TOKEN and REDIS_URL (redis://host:6379/0)", file=sys.stderr)
        return 2
    try:
        validate_token(token)
    except TokenValidationError:  # never print the token: it is the bot's password
        print("BOT_TOKEN is not a bot token (<bot id>:<secret>, from @BotFather)", file=sys.stderr)
        return 2
    asyncio.run(run(token, redis_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
