"""A bot replica for the shared-budget tests: broadcasts through ``RateLimitMiddleware``.

Usage: ``python tests/_broadcast_proc.py``, then one JSON line per broadcast on stdin:
``{"redis": URL, "api": BASE_URL, "token": T, "prefix": P, "first": N, "count": C,
"limits": {TelegramLimits fields}}``. Prints ``ready`` once aiogram is loaded (it takes
seconds, so one replica serves several tests). For each line it sends one message to each
of the chats ``first .. first+count-1`` at once, through a new Bot and middleware, and
prints the middleware's stats and the number of sends that raised as one JSON line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from redis.asyncio import Redis

from codex_bot.telegram import RateLimitMiddleware, TelegramLimits


async def broadcast(order: dict[str, Any]) -> dict[str, Any]:
    redis = Redis.from_url(order["redis"])
    limits = TelegramLimits(**order["limits"])
    middleware = RateLimitMiddleware(redis, limits, key_prefix=order["prefix"])
    session = AiohttpSession(api=TelegramAPIServer.from_base(order["api"]))
    bot = Bot(order["token"], session=session)
    bot.session.middleware(middleware)
    chats = range(order["first"], order["first"] + order["count"])
    results = await asyncio.gather(
        *(bot.send_message(chat, "news") for chat in chats), return_exceptions=True
    )
    await bot.session.close()
    await redis.aclose()
    failed = sum(isinstance(result, BaseException) for result in results)
    return {"stats": dataclasses.asdict(middleware.stats), "failed": failed}


def main() -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(asyncio.run(broadcast(json.loads(line)))), flush=True)


if __name__ == "__main__":
    main()
