"""The dependency-injector container: what every handler gets as its second argument.

Handlers take what they need by calling a provider: ``container.bot()``,
``container.events_monitor()``. ``app.py`` builds it with the objects made at start-up::

    container = Container(settings=settings, bot=bot, redis=redis, processor=processor,
                          flood_control=flood_control)
"""

from __future__ import annotations

from aiogram import Bot
from dependency_injector import containers, providers
from redis.asyncio import Redis

from codex_bot.redis import RedisStreamProcessor
from codex_bot.telegram import RateLimitMiddleware
from example_bot.services import EventsMonitor
from example_bot.settings import Settings


class Container(containers.DeclarativeContainer):
    """The bot's dependencies: things made at start-up, and services built from them."""

    settings = providers.Dependency(instance_of=Settings)
    bot = providers.Dependency(instance_of=Bot)
    redis = providers.Dependency(instance_of=Redis)
    processor = providers.Dependency(instance_of=RedisStreamProcessor)
    flood_control = providers.Dependency(instance_of=RateLimitMiddleware)

    events_monitor = providers.Singleton(EventsMonitor, redis=redis, processor=processor)
