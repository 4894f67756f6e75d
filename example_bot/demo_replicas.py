"""Bot replicas in one process, for ``make demo``: each with its own ``Bot`` and processor.

In production each replica is a process of its own (``python -m example_bot.main`` with a
``CONSUMER_NAME`` of its own); the demo runs two in one event loop to stay one command.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiogram import Bot, Dispatcher
from arq.connections import ArqRedis
from redis.asyncio import Redis

from codex_bot.testing import TelegramBotAPIStandIn
from example_bot.app import create_dispatcher
from example_bot.container import Container
from example_bot.demo_view import DemoFailedError
from example_bot.settings import Settings

START_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Replica:
    """One bot process's worth of objects: its Bot (with the flood control) and dispatcher."""

    bot: Bot
    dp: Dispatcher

    @property
    def container(self) -> Container:
        container: Container = self.dp["container"]
        return container


def build_replica(
    api: TelegramBotAPIStandIn,
    settings: Settings,
    client: Redis,
    arq_pool: ArqRedis,
    *,
    first: bool,
) -> Replica:
    """A replica of the example bot talking to ``api``: its own Bot, flood control, processor."""
    bot = Bot(settings.bot_token, session=api.session())
    # An aiogram Router joins one Dispatcher only: the second replica in this process takes
    # stream events and leaves Telegram commands to the first.
    dp = create_dispatcher(settings, bot=bot, redis=client, arq_pool=arq_pool, commands=first)
    return Replica(bot, dp)


@contextlib.asynccontextmanager
async def running(replicas: list[Replica]) -> AsyncIterator[None]:
    """Start every replica; on the way out stop them, each draining its processor.

    Telegram hands updates to one ``getUpdates`` caller at a time, so only the first replica
    polls; the others start and stop through the dispatcher's hooks, as a replica fed by a
    webhook does.
    """
    first, *others = replicas
    polling = asyncio.create_task(first.dp.start_polling(first.bot, handle_signals=False))
    try:
        async with contextlib.AsyncExitStack() as stack:
            for replica in others:
                await replica.dp.emit_startup(bot=replica.bot)
                stack.push_async_callback(replica.bot.session.close)
                stack.push_async_callback(replica.dp.emit_shutdown, bot=replica.bot)
            await _until_running(replicas, polling)
            yield
    finally:
        # aiogram runs the shutdown hooks (the processor drains), then closes the session.
        if not polling.done():
            await first.dp.stop_polling()
        await polling


async def _until_running(replicas: list[Replica], polling: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not (all(r.container.processor().is_running for r in replicas) or polling.done()):
        if time.monotonic() > deadline:
            msg = f"timed out after {START_TIMEOUT:.0f}s waiting for the replicas to start"
            raise DemoFailedError(msg)
        await asyncio.sleep(0.01)
