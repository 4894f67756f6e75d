"""``InMemoryStreamStorage`` under a real processor and dispatcher, as in a user's unit test."""

from __future__ import annotations

import asyncio

import pytest
from aiogram import Bot
from redis.exceptions import ResponseError

from codex_bot.redis import (
    BotRedisDispatcher,
    GroupConsumer,
    RedisRouter,
    RedisStreamProcessor,
)
from codex_bot.testing import InMemoryStreamStorage, TelegramBotAPIStandIn
from tests._helpers import BotContainer
from tests.conftest import wait_for

router = RedisRouter()


@router.message("order.paid")
async def on_order_paid(payload: dict, container) -> None:
    await container.bot().send_message(payload["chat_id"], f"Paid: {payload['total']} EUR")


async def test_a_handler_runs_without_redis_or_telegram() -> None:
    """The README's example, with its feature inline (tests/test_readme.py runs the copy)."""
    storage = InMemoryStreamStorage()
    storage.add_event("bot_events", "order.paid", {"chat_id": 42, "total": 9.5})
    storage.add("bot_events", {"chat_id": "42"})  # no "type": goes to bot_events:dead

    events = BotRedisDispatcher()
    events.include_router(router)
    processor = RedisStreamProcessor(storage, "bot_events", "bot", "test")
    processor.set_message_callback(events.process_message)

    async with TelegramBotAPIStandIn() as api:
        bot = Bot(token="42:TEST", session=api.session())
        events.setup(container=BotContainer(bot=bot))
        async with processor:  # leaving it drains the handler and flushes the ACK
            await api.wait_for_messages(1)
        await bot.session.close()

    assert [(m.chat_id, m.text) for m in api.sent] == [(42, "Paid: 9.5 EUR")]
    assert storage.pending("bot_events", "bot") == []  # handled and acknowledged
    [(_, letter)] = storage.dead_letters("bot_events")
    assert letter["chat_id"] == "42"
    assert letter["codex.dead.reason"].startswith("entry has no 'type' field")
    assert (processor.stats.acked, processor.stats.dead_lettered) == (1, 1)


async def test_a_failing_handler_is_redelivered_then_dead_lettered() -> None:
    storage = InMemoryStreamStorage()
    calls: list[int] = []
    events = BotRedisDispatcher()  # no retry scheduler: a failure leaves the entry pending

    @events.on_message("order.paid")
    async def fail(payload: dict, container) -> None:
        calls.append(payload["chat_id"])
        raise RuntimeError("shop is down")

    events.setup(container=None)
    entry_id = storage.add_event("bot_events", "order.paid", {"chat_id": 7})
    processor = RedisStreamProcessor(
        storage,
        "bot_events",
        "bot",
        "test",
        claim_min_idle_ms=0,
        claim_interval=0.01,
        max_deliveries=3,
    )
    processor.set_message_callback(events.process_message)
    async with processor:
        await wait_for(lambda: storage.dead_letters("bot_events"), message="dead letter")

    assert calls == [7, 7, 7]
    [(_, letter)] = storage.dead_letters("bot_events")
    assert letter["codex.dead.source_id"] == entry_id
    assert letter["codex.dead.reason"] == "delivered 4 times (max_deliveries=3)"
    assert storage.pending("bot_events", "bot") == []


async def test_the_processor_recreates_a_group_lost_to_flushall() -> None:
    storage = InMemoryStreamStorage()
    seen: list[int] = []
    events = BotRedisDispatcher()

    @events.on_message("ping")
    async def on_ping(payload: dict, container) -> None:
        seen.append(payload["n"])

    events.setup(container=None)
    processor = RedisStreamProcessor(storage, "bot_events", "bot", "test", poll_interval=30)
    processor.set_message_callback(events.process_message)
    async with processor:
        storage.add_event("bot_events", "ping", {"n": 1})
        await wait_for(lambda: processor.stats.acked == 1)
        storage.flushall()  # wakes the blocked read, which then meets NOGROUP
        await wait_for(lambda: processor.stats.groups_recreated == 1)
        storage.add_event("bot_events", "ping", {"n": 2})
        await wait_for(lambda: processor.stats.acked == 2)

    assert seen == [1, 2]


async def test_a_chat_that_blocked_the_bot_is_dead_lettered_not_retried() -> None:
    storage = InMemoryStreamStorage()
    entry_id = storage.add_event("bot_events", "order.paid", {"chat_id": 7, "total": 1})
    events = BotRedisDispatcher()
    events.include_router(router)
    processor = RedisStreamProcessor(storage, "bot_events", "bot", "test")
    processor.set_message_callback(events.process_message)

    async with TelegramBotAPIStandIn() as api:
        api.block_chat(7)
        bot = Bot(token="42:TEST", session=api.session())
        events.setup(container=BotContainer(bot=bot))
        async with processor:
            await api.wait_for_calls("sendMessage", 1)
        await bot.session.close()

    assert api.sent == []
    [(_, letter)] = storage.dead_letters("bot_events")
    assert letter["codex.dead.source_id"] == entry_id
    assert (
        letter["codex.dead.error"]
        == "TelegramForbiddenError: Forbidden: bot was blocked by the user"
    )
    assert storage.pending("bot_events", "bot") == []


async def test_a_blocked_read_hears_nogroup_when_its_group_is_destroyed() -> None:
    storage = InMemoryStreamStorage()
    await storage.ensure_group("s", "g", "0")
    read = asyncio.create_task(storage.read_new(GroupConsumer("s", "g", "c"), 10, 30_000))
    await asyncio.sleep(0)  # one loop turn: the read reaches its wait

    assert storage.destroy_group("s", "g") is True
    with pytest.raises(ResponseError, match="NOGROUP"):
        await asyncio.wait_for(read, 5)
    assert storage.destroy_group("s", "g") is False


async def test_an_injected_clock_makes_entries_stale_without_waiting() -> None:
    now = [1000.0]
    storage = InMemoryStreamStorage(clock=lambda: now[0])
    await storage.ensure_group("s", "g", "0")
    entry_id = storage.add("s", {"n": 1, "price": 2.5, b"raw": b"\xff"})
    await storage.read_new(GroupConsumer("s", "g", "c1"), 10, 0)
    assert (
        await storage.claim_stale(GroupConsumer("s", "g", "c2"), 60_000, "0-0", 10)
    ).entries == []

    now[0] += 61
    [pending] = storage.pending("s", "g")
    page = await storage.claim_stale(GroupConsumer("s", "g", "c2"), 60_000, "0-0", 10)

    assert (pending.entry_id, pending.consumer, pending.idle_ms) == (entry_id, "c1", 61_000)
    assert page.entries == [(entry_id, {b"n": b"1", b"price": b"2.5", b"raw": b"\xff"})]
    assert storage.pending("s", "g")[0].deliveries == 2
    assert storage.entries("s") == [(entry_id, {"n": "1", "price": "2.5", "raw": "\\xff"})]


def test_ids_grow_within_one_millisecond_and_bad_fields_are_refused() -> None:
    storage = InMemoryStreamStorage()
    ids = [storage.add("s", {"n": n}) for n in range(500)]
    keys = [tuple(map(int, entry_id.split("-"))) for entry_id in ids]

    assert keys == sorted(set(keys))
    assert storage.delete("s", ids[0], ids[0], "1-1") == 1
    assert len(storage.entries("s")) == 499
    with pytest.raises(ValueError, match="at least one field"):
        storage.add("s", {})
    with pytest.raises(TypeError, match="not bool"):
        storage.add("s", {"flag": True})
    with pytest.raises(ResponseError, match="NOGROUP"):
        storage.pending("s", "missing")


def test_one_storage_outlives_the_event_loop_of_a_test() -> None:
    storage = InMemoryStreamStorage()  # e.g. a module-scoped fixture

    async def read_until_timeout() -> None:
        await storage.ensure_group("s", "g", "0")
        assert await storage.read_new(GroupConsumer("s", "g", "c"), 10, 5) == []

    async def read_until_added() -> list:
        read = asyncio.create_task(storage.read_new(GroupConsumer("s", "g", "c"), 10, 30_000))
        await asyncio.sleep(0)  # one loop turn: the read reaches its wait
        storage.add("s", {"n": "1"})
        return await asyncio.wait_for(read, 5)

    for scenario in (read_until_timeout, read_until_added):
        # a loop of its own, left out of the policy pytest-asyncio manages
        loop = asyncio.new_event_loop()
        try:
            result = loop.run_until_complete(scenario())
        finally:
            loop.close()
    assert [fields for _, fields in result] == [{b"n": b"1"}]
