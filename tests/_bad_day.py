"""A bot that had a bad day: dead letters, pending entries and waiting retries, all made by the
real ``RedisStreamProcessor`` and ``BotRedisDispatcher`` on a real redis-server, for the
operations tests (``codex_bot.ops`` and the ``codex-bot`` command)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiogram.exceptions import TelegramForbiddenError, TelegramServerError
from aiogram.methods import SendMessage
from redis.asyncio import Redis

from codex_bot.redis import (
    ArqRetryScheduler,
    BotRedisDispatcher,
    RedisStreamProcessor,
    StreamProducer,
    partition_stream,
)
from codex_bot.redis.dispatcher import handler_name
from tests._helpers import arq_pool, running_processor
from tests.conftest import wait_for, xlen_is

METHOD = SendMessage(chat_id=7, text="hello")
GROUP = "bot"
ARQ_QUEUE = "arq:queue"
BLOCKED_CHAT = 7


class Bot:
    """Handlers of a notification bot, recording what each one was called with.

    ``order.paid`` runs ``notify`` (always fine) and ``send`` (Forbidden for a chat in
    ``blocked``: dead-lettered at once); ``reminder.due`` runs ``remind`` (a 502: retried
    later through arq); ``report.ready`` runs ``build``, which hangs until released.
    """

    def __init__(self, scheduler: ArqRetryScheduler | None = None) -> None:
        self.calls: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.blocked = {BLOCKED_CHAT}
        self.release = asyncio.Event()
        self.dispatcher = BotRedisDispatcher(scheduler, max_attempts=3, retry_delay=3600)
        on = self.dispatcher.on_message

        @on("order.paid")
        async def notify(payload: dict[str, Any], container: Any) -> None:
            self.calls["notify"].append(payload)

        @on("order.paid")
        async def send(payload: dict[str, Any], container: Any) -> None:
            self.calls["send"].append(payload)
            if payload["chat_id"] in self.blocked:
                raise TelegramForbiddenError(
                    method=METHOD, message="Forbidden: bot was blocked by the user"
                )

        @on("reminder.due")
        async def remind(payload: dict[str, Any], container: Any) -> None:
            self.calls["remind"].append(payload)
            raise TelegramServerError(method=METHOD, message="Bad Gateway")

        @on("report.ready")
        async def build(payload: dict[str, Any], container: Any) -> None:
            self.calls["build"].append(payload)
            await self.release.wait()

        self.send_name = handler_name(send)
        self.notify_name = handler_name(notify)
        self.dispatcher.setup(container=None)

    def count(self, handler: str) -> int:
        return len(self.calls[handler])


@contextlib.asynccontextmanager
async def consuming(
    redis: Redis, stream: str, bot: Bot, consumer: str = "c1", **options: Any
) -> AsyncIterator[RedisStreamProcessor]:
    """The bot's processor on ``stream``, stopped (quickly) on the way out."""
    options.setdefault("drain_timeout", 0.1)
    callback = bot.dispatcher.process_message
    async with running_processor(redis, stream, callback, consumer, **options) as processor:
        yield processor


@dataclass
class BadDay:
    """What the bad day left behind."""

    bot: Bot
    dead_orders: list[str]
    """Entry ids of the ``order.paid`` events whose ``send`` failed (one letter each)."""
    untyped: list[str]
    """Entry ids of entries without a type (parked by the processor)."""
    stuck: list[str]
    """Entry ids of ``report.ready`` events left pending by consumer ``c1``."""
    retried: list[str]
    """Entry ids of ``reminder.due`` events whose retry waits in arq's queue."""


async def bad_day(
    redis: Redis,
    url: str,
    stream: str,
    *,
    orders: int = 2,
    untyped: int = 1,
    stuck: int = 2,
    retried: int = 1,
) -> BadDay:
    """Run the bot through a bad day and stop it; see ``BadDay`` for what it leaves."""
    producer = StreamProducer(redis, stream)
    async with arq_pool(url) as pool:
        bot = Bot(ArqRetryScheduler(pool))
        async with consuming(redis, stream, bot):
            order_ids = await producer.add_events(
                [("order.paid", {"chat_id": BLOCKED_CHAT, "n": n}) for n in range(orders)]
            )
            untyped_ids = [await redis.xadd(stream, {"chat_id": "9"}) for _ in range(untyped)]
            stuck_ids = await producer.add_events(
                [("report.ready", {"chat_id": 100 + n, "n": n}) for n in range(stuck)]
            )
            retried_ids = await producer.add_events(
                [("reminder.due", {"chat_id": 6, "n": n}) for n in range(retried)]
            )
            await wait_for(lambda: xlen_is(redis, stream + ":dead", orders + untyped))
            await wait_for(lambda: _zcard_is(pool, retried), message="retries enqueued")
            await wait_for(lambda: bot.count("build") == stuck, message="stuck handlers")
    return BadDay(bot, order_ids, untyped_ids, stuck_ids, retried_ids)


async def blocked_day(
    redis: Any,
    stream: str,
    chats: Sequence[int],
    *,
    stuck: int = 0,
    partitions: int | None = None,
    extra: Sequence[dict[str, str]] = (),
) -> Bot:
    """A day on which every chat blocked the bot, without arq (so on a cluster too).

    Each ``order.paid`` to a chat in ``chats`` leaves one dead letter (``send`` failed);
    ``stuck`` ``report.ready`` events stay pending with consumer ``c1``; each entry of
    ``extra`` is added raw and dead-lettered by the processor (say, one with too many
    fields). With ``partitions``, everything goes through the partitions of ``stream``.
    """
    bot = Bot()
    bot.blocked = set(chats)
    producer = StreamProducer(redis, stream, partitions=partitions)
    names = [stream] if partitions is None else list(map(_partition(stream), range(partitions)))
    options: dict[str, Any] = {} if partitions is None else {"partitions": partitions}
    async with consuming(redis, stream, bot, **options) as processor:
        await producer.add_events([("order.paid", {"chat_id": chat}) for chat in chats])
        await producer.add_events([("report.ready", {"chat_id": 100 + n}) for n in range(stuck)])
        for n, fields in enumerate(extra):
            await redis.xadd(names[n % len(names)], fields)
        letters = len(chats) + len(extra)
        await wait_for(lambda: _letters_are(redis, names, letters), message="the dead letters")
        # written and acknowledged: a stop now would not leave one pending
        await wait_for(lambda: processor.stats.dead_lettered == letters, message="the ACKs")
        await wait_for(lambda: bot.count("build") == stuck, message="stuck handlers")
    return bot


def _partition(stream: str) -> Callable[[int], str]:
    return lambda index: partition_stream(stream, index)


async def _letters_are(redis: Any, streams: Sequence[str], count: int) -> bool:
    return sum([await redis.xlen(name + ":dead") for name in streams]) == count


async def _zcard_is(redis: Redis, count: int) -> bool:
    return await redis.zcard(ARQ_QUEUE) == count


# -- the installed command ------------------------------------------------------------------

CODEX_BOT = Path(sys.executable).with_name("codex-bot")


@dataclass
class Result:
    """How one ``codex-bot`` run ended."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


async def cli(*args: str, url: str | None = None, stdin: str = "", timeout: float = 30) -> Result:
    """Run the installed ``codex-bot`` script as a user would (``REDIS_URL`` set to ``url``)."""
    assert CODEX_BOT.exists(), f"{CODEX_BOT} is missing: pip install -e . installs it"
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    if url is not None:
        env["REDIS_URL"] = url
    process = await asyncio.create_subprocess_exec(
        str(CODEX_BOT),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())
