"""A bot replica for the broadcast scenario, and the flood control's own cost.

``python -m bench.replica broadcast --url ... --stream ... --group ... --consumer ... --api ...
--partitions N --share 0,2,...`` is one replica of a notification bot:
``RedisStreamProcessor`` (default settings but ``partitions=N``) + ``BotRedisDispatcher``
whose handler sends each event through an aiogram ``Bot`` with ``RateLimitMiddleware`` to the
Bot API stand-in at ``--api``. It starts listening at once, on partition streams still empty,
and prints ``ready`` once it holds the leases of exactly the ``--share`` partitions (its share
once every replica runs; a replica that starts first takes them all, then hands some over).
The stream is filled then, and it sends what arrives. It stops (draining, giving its leases
back) at the next line on stdin, and prints one JSON line: what it handled, the partitions
it held, the seqs it sent per chat, the middleware's stats.

With ``--events N`` (the first replica) it then waits for one more line and times ``N``
requests through a middleware of its own, on the same Redis, for chats that never wait (a
fresh chat each, a bot-wide budget too large to make anyone wait), with a ``make_request``
that returns at once: what the middleware adds to a request whose turn has come. It runs in
this process to spare loading aiogram once more; the other replica has exited by then.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.methods import SendMessage
from redis.asyncio import Redis

from bench.codex import _processor
from bench.common import child_parser, connect, latency_result
from codex_bot.redis import RedisStreamProcessor, RedisStreamStorage
from codex_bot.telegram import RateLimitMiddleware, TelegramLimits

TOKEN = "4242:BENCH"
LIMITS = TelegramLimits(per_second=300, per_chat_per_second=10, per_group_per_minute=200)
"""Ten times Telegram's limits, so the broadcast takes seconds, not minutes."""
_WARM_UP = 200
_SHARE_TIMEOUT = 30.0
_UNLIMITED = TelegramLimits(per_second=1_000_000, per_chat_per_second=1_000_000)


async def _broadcast(args: argparse.Namespace) -> dict[str, Any]:
    redis = connect(args.url)
    middleware = RateLimitMiddleware(redis, LIMITS)
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(args.api)))
    bot.session.middleware(middleware)
    sent: dict[int, list[int]] = defaultdict(list)

    async def send(payload: dict[str, Any], container: Any) -> None:
        await bot.send_message(payload["chat_id"], f"{payload['seq']} {payload['text']}")
        sent[payload["chat_id"]].append(payload["seq"])

    processor = _processor(
        RedisStreamStorage(redis),
        args.stream,
        args.group,
        send,
        consumer=args.consumer,
        container=SimpleNamespace(bot=bot),
        partitions=args.partitions,
    )
    share = [int(index) for index in args.share.split(",")]
    try:
        await processor.start_listening()
        held = await _hold(processor, share)
        print("ready" if held == share else f"holds {held}, not {share}", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        await processor.stop_listening()
        limiter = None
        if args.events:
            await asyncio.to_thread(sys.stdin.readline)
            limiter = await _limiter(redis, args.events)
    finally:
        await bot.session.close()
        await redis.aclose()
    stats = processor.stats
    return {
        "limiter": limiter,
        "consumer": args.consumer,
        "partitions": held,
        "handled": stats.handled,
        "failed": stats.failed,
        "dead_lettered": stats.dead_lettered,
        "sent": {str(chat): seqs for chat, seqs in sent.items()},
        "middleware": dataclasses.asdict(middleware.stats),
    }


async def _hold(processor: RedisStreamProcessor, share: list[int]) -> list[int]:
    """Wait until the replica holds the leases of exactly ``share``; what it holds then."""
    deadline = time.perf_counter() + _SHARE_TIMEOUT
    while processor.owned_partitions != share and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    return processor.owned_partitions


async def _limiter(redis: Redis, calls: int) -> dict[str, Any]:
    middleware = RateLimitMiddleware(redis, _UNLIMITED, key_prefix="bench:limiter")
    bot = Bot(TOKEN)

    async def answered(bot: Bot, method: Any) -> Any:
        return True

    seconds: list[float] = []
    try:
        for n in range(_WARM_UP + calls):
            method = SendMessage(chat_id=1_000_000 + n, text="x")
            started = time.perf_counter()
            await middleware(answered, bot, method)
            seconds.append(time.perf_counter() - started)
    finally:
        await bot.session.close()
    result = latency_result(seconds[_WARM_UP:], calls)
    result["waited"] = middleware.stats.waited
    result["unpaced"] = middleware.stats.unpaced
    return result


def main() -> None:
    parser = child_parser(__doc__ or "")
    parser.add_argument("--api", required=True, help="the Bot API stand-in's base URL")
    parser.add_argument("--share", required=True, help="the partitions to hold, as 0,2,4,6")
    args = parser.parse_args()
    result = asyncio.run(_broadcast(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
