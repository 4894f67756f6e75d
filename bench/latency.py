"""The latency scenario's producer: a steady rate on an absolute schedule, send time inside.

Each event carries ``sent``: the producer's ``time.perf_counter()`` just before its XADD.
The consumer runs in the same process (same clock) on a client of its own and records
``perf_counter() - sent`` when the handler starts.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from bench.common import EVENT_TYPE
from codex_bot.redis import StreamProducer

LATENCY_CHATS = 100


async def produce_paced(redis: Redis, stream: str, rate: float, seconds: float) -> int:
    """XADD ``rate * seconds`` events, event n due at ``start + n / rate``; return the count.

    The schedule is absolute, so a late wake-up does not push every later event back; an
    event that is due already is sent at once.
    """
    producer = StreamProducer(redis, stream)
    total = int(rate * seconds)
    start = time.perf_counter() + 0.01
    for n in range(total):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await producer.add_event(
            EVENT_TYPE,
            {"chat_id": 30_000 + n % LATENCY_CHATS, "seq": n, "sent": time.perf_counter()},
        )
    return total
