"""A bot replica reading a partitioned stream, for the replica tests.

Usage: ``python tests/_partition_replica.py URL STREAM CONSUMER PARTITIONS LEASE_TTL``.
Every event is recorded in the list ``<stream>:records`` as JSON when its handler starts and
when it ends: ``{"e": "start" or "end", "r": consumer, "p": partition stream, "c": chat,
"s": seq, "t": time}``. The handler takes 10 ms (a Telegram call takes longer). SIGTERM stops
the replica gracefully (its partitions are drained, acknowledged and handed over).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

from redis.asyncio import Redis

from codex_bot.redis import RedisStreamProcessor, RedisStreamStorage, current_event


async def main(url: str, stream: str, consumer: str, partitions: int, lease_ttl: float) -> None:
    redis = Redis.from_url(url, decode_responses=True)
    records = stream + ":records"

    async def handle(payload: dict[str, Any]) -> None:
        event = current_event()
        assert event is not None
        record = {"r": consumer, "p": event.stream_name, "c": payload["chat_id"]}
        record["s"] = payload["seq"]
        await redis.rpush(records, json.dumps({**record, "e": "start", "t": time.time()}))
        await asyncio.sleep(0.01)
        await redis.rpush(records, json.dumps({**record, "e": "end", "t": time.time()}))

    processor = RedisStreamProcessor(
        RedisStreamStorage(redis),
        stream,
        "bot",
        consumer,
        partitions=partitions,
        lease_ttl=lease_ttl,
        claim_interval=0.5,
        poll_interval=0.2,
    )
    processor.set_message_callback(handle)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await processor.start_listening()
    print("ready", flush=True)
    await stop.wait()
    await processor.stop_listening()
    await redis.aclose()
    print("stopped", flush=True)


if __name__ == "__main__":
    url, stream, consumer, partitions, ttl = sys.argv[1:6]
    asyncio.run(main(url, stream, consumer, int(partitions), float(ttl)))
