import asyncio

from codex_bot.redis import (
    BotRedisDispatcher,
    RedisRouter,
    RedisStreamProcessor,
    RedisStreamStorage,
    StreamProducer,
)
from tests.conftest import wait_for


async def test_round_trip(redis, stream):
    seen = []
    router = RedisRouter()

    @router.message("order.paid")
    async def on_paid(payload, container):
        seen.append(payload)

    dispatcher = BotRedisDispatcher()
    dispatcher.include_router(router)
    dispatcher.setup(container=object())
    producer = StreamProducer(redis, stream)
    await producer.add_event("order.paid", {"chat_id": 1, "items": [{"sku": "A"}], "ok": True})
    processor = RedisStreamProcessor(RedisStreamStorage(redis), stream, "bot", "c1")
    processor.set_message_callback(dispatcher.process_message)
    await processor.start_listening()
    await wait_for(lambda: seen, message="event")
    await producer.add_event("order.paid", {"chat_id": 2, "note": None})
    await wait_for(lambda: len(seen) == 2)
    await wait_for(lambda: processor.stats.acked == 2)
    await processor.stop_listening()
    assert seen[0] == {"type": "order.paid", "chat_id": 1, "items": [{"sku": "A"}], "ok": True}
    assert (await redis.xpending(stream, "bot"))["pending"] == 0
    await asyncio.sleep(0)
