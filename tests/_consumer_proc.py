"""A bot process for the kill -9 test: records each handled entry id in ``<stream>:handled``.

Usage: ``python tests/_consumer_proc.py URL STREAM CONSUMER FAST``. Events with ``n < FAST``
are handled at once; the others hang (slow work), so a kill leaves them pending.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from redis.asyncio import Redis

from codex_bot.redis import RedisStreamProcessor, RedisStreamStorage, current_event


async def main(url: str, stream: str, consumer: str, fast: int) -> None:
    redis = Redis.from_url(url, decode_responses=True)

    async def handle(payload: dict[str, Any]) -> None:
        event = current_event()
        assert event is not None
        if payload["n"] >= fast:
            await asyncio.Event().wait()
        await redis.rpush(stream + ":handled", event.entry_id)

    processor = RedisStreamProcessor(RedisStreamStorage(redis), stream, "bot", consumer)
    processor.set_message_callback(handle)
    await processor.start_listening()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
