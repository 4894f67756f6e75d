"""codex_bot in one file: BOT_TOKEN=... REDIS_URL=... python -m example_bot.minimal"""

import asyncio
import os
from typing import Any

from aiogram import Bot, Dispatcher
from dependency_injector import containers, providers
from redis.asyncio import Redis

from codex_bot.lifecycle import setup_redis_events
from codex_bot.redis import (
    BotRedisDispatcher,
    RedisRouter,
    RedisStreamProcessor,
    RedisStreamStorage,
)


class Container(containers.DeclarativeContainer):
    bot = providers.Dependency(instance_of=Bot)


redis_router = RedisRouter()


@redis_router.message("notification.created")
async def notify(payload: dict[str, Any], container: Container) -> None:
    await container.bot().send_message(payload["chat_id"], payload["text"])


def build(bot: Bot, redis: Redis) -> Dispatcher:
    storage = RedisStreamStorage(redis)
    processor = RedisStreamProcessor(storage, "bot_events", "my_bot", f"my_bot-{os.getpid()}")
    events = BotRedisDispatcher()
    events.include_router(redis_router)
    dp = Dispatcher()
    setup_redis_events(dp, processor, redis_dispatcher=events, container=Container(bot=bot))
    return dp


async def main() -> None:
    bot = Bot(os.environ["BOT_TOKEN"])
    async with Redis.from_url(os.environ["REDIS_URL"]) as redis:
        await build(bot, redis).start_polling(bot)


if __name__ == "__main__":
    asyncio.run(main())
