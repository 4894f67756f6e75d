"""The middleware under a stream broadcast and an ordinary aiogram handler, end to end."""

from __future__ import annotations

import time
from typing import Any

from aiogram import Bot, Dispatcher, Router
from aiogram.filters import Command
from aiogram.types import Message, Update
from redis.asyncio import Redis

from codex_bot.redis import BotRedisDispatcher, RedisRouter, StreamProducer
from codex_bot.telegram import RateLimitMiddleware, TelegramLimits
from codex_bot.testing import TelegramBotAPIStandIn
from tests._helpers import BotContainer, command_update
from tests.conftest import pending_count, wait_for

LIMITS = TelegramLimits(per_second=100)


notifications = RedisRouter()


@notifications.message("notification.created")
async def notify(payload: dict[str, Any], container: BotContainer) -> None:
    await container.bot().send_message(payload["chat_id"], payload["text"])


async def test_a_stream_broadcast_and_a_command_answer_share_the_budget(
    redis: Redis, stream: str, make_processor: Any
) -> None:
    async with TelegramBotAPIStandIn(limits=LIMITS) as api:
        bot = Bot("4242:TEST", session=api.session())
        middleware = RateLimitMiddleware(redis, LIMITS)
        bot.session.middleware(middleware)
        events = BotRedisDispatcher()
        events.include_router(notifications)
        events.setup(container=BotContainer(bot=bot))
        processor = make_processor(redis, stream, events.process_message, max_concurrency=100)
        commands = Router()

        @commands.message(Command("ping"))
        async def ping(message: Message) -> None:
            await message.answer("pong")

        dp = Dispatcher()
        dp.include_router(commands)
        await StreamProducer(redis, stream).add_events(
            [("notification.created", {"chat_id": chat, "text": "sale!"}) for chat in range(1, 201)]
        )
        started = time.monotonic()

        await processor.start_listening()
        await api.wait_for_messages(100)
        update = Update.model_validate(
            {"update_id": 1, **command_update(9_999, "/ping")}, context={"bot": bot}
        )
        await dp.feed_update(bot, update)  # an ordinary handler, mid-broadcast
        await api.wait_for_messages(201)
        await wait_for(lambda: processor.stats.acked == 200, message="200 acks")
        elapsed = time.monotonic() - started
        await processor.stop_listening()
        await bot.session.close()

    # none when the process runs on time; a stall of a loaded machine can bunch a send or
    # two into one window: the middleware absorbs that 429 and nothing is lost
    assert api.flood_answers <= 4
    assert middleware.stats.flood_raised == 0
    assert [m.text for m in api.sent_to(9_999)] == ["pong"]
    assert middleware.stats.paced == 201
    assert await pending_count(redis, stream) == 0
    assert await redis.exists(stream + ":dead") == 0
    assert elapsed > 1.9  # 201 messages paced at 100/s, margin included
