"""Run the bot against Telegram: ``BOT_TOKEN=... REDIS_URL=... python -m example_bot.main``.

Start the retry worker next to it: ``arq example_bot.worker.WorkerSettings``. SIGINT or
SIGTERM stops it: polling ends, the processor drains in-flight events, the bot closes.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from redis.asyncio import Redis

from example_bot.app import create_dispatcher
from example_bot.settings import Settings, SettingsError
from example_bot.worker import retry_pool


async def run(settings: Settings) -> None:
    """Poll Telegram and consume the stream until SIGINT/SIGTERM."""
    session = None
    if settings.telegram_api_url:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    bot = Bot(settings.bot_token, session=session)
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=5, health_check_interval=30)
    arq_pool = retry_pool(settings)
    try:
        dp = create_dispatcher(settings, bot=bot, redis=redis, arq_pool=arq_pool)
        # start_polling runs the startup hooks (the processor starts), polls, and on a
        # signal runs the shutdown hooks (the processor drains) before closing the bot.
        await dp.start_polling(bot)
    finally:
        await arq_pool.aclose()
        await redis.aclose()


def main() -> int:
    """Entry point; returns the exit code."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"example_bot: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
