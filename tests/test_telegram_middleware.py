"""``RateLimitMiddleware`` on a real aiogram Bot, over HTTP to the stand-in, on a real Redis."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramRetryAfter
from aiogram.types import InputMediaPhoto
from redis.asyncio import Redis

from codex_bot.telegram import FloodLimiter, RateLimitMiddleware, TelegramLimits
from codex_bot.testing import RedisServer, TelegramBotAPIStandIn
from tests._helpers import max_in_window
from tests.conftest import wait_for

TOKEN = "4242:TEST"
FAST = TelegramLimits(per_second=200, per_chat_per_second=20, per_group_per_minute=600)


@pytest.fixture
async def make_bot() -> AsyncIterator[Callable[..., Bot]]:
    """``make_bot(api, middleware)``: a Bot on the stand-in with the middleware installed."""
    bots: list[Bot] = []

    def make(api: TelegramBotAPIStandIn, middleware: RateLimitMiddleware) -> Bot:
        bot = Bot(TOKEN, session=api.session())
        bot.session.middleware(middleware)
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        await bot.session.close()


async def scripts_run(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha")
    )


async def test_a_broadcast_goes_out_at_the_bot_wide_rate_without_a_429(
    redis: Redis, make_bot: Callable[..., Bot]
) -> None:
    limits = TelegramLimits(per_second=100)
    async with TelegramBotAPIStandIn(limits=limits) as api:
        middleware = RateLimitMiddleware(redis, limits)
        bot = make_bot(api, middleware)
        started = time.monotonic()

        await asyncio.gather(*(bot.send_message(chat, "news") for chat in range(1, 151)))

        elapsed = time.monotonic() - started
        arrivals = [m.at for m in api.sent]
    assert api.flood_answers <= 3  # a stall of a loaded machine may bunch a send or two
    assert middleware.stats.flood_raised == 0
    assert len(arrivals) == 150
    assert max_in_window(arrivals, 1.0) <= 100
    # far above the per-chat pace (`make bench` measures the rate itself: tg_rate_ratio)
    assert 149 / elapsed >= 0.5 * 100 / 1.03
    assert middleware.stats.paced == 150
    assert middleware.stats.waited == 149


async def test_a_429_is_absorbed_and_the_chat_keeps_its_order(
    redis: Redis, make_bot: Callable[..., Bot]
) -> None:
    async with TelegramBotAPIStandIn() as api:
        middleware = RateLimitMiddleware(redis, FAST)
        bot = make_bot(api, middleware)
        api.fail_with_retry_after(7, retry_after=1)
        started = time.monotonic()

        sent = await asyncio.gather(*(bot.send_message(7, f"m{i}") for i in range(4)))

        elapsed = time.monotonic() - started
    assert [m.text for m in sent] == ["m0", "m1", "m2", "m3"]
    assert [m.text for m in api.sent_to(7)] == ["m0", "m1", "m2", "m3"]
    assert [r.error_code for r in api.rejected] == [429]
    assert elapsed >= 1.0  # the chat was held for retry_after
    assert middleware.stats.flood_absorbed == 1
    assert middleware.stats.flood_raised == 0


async def test_a_429_holds_the_chat_for_every_process_sharing_the_redis(
    redis: Redis, make_bot: Callable[..., Bot]
) -> None:
    async with TelegramBotAPIStandIn() as api:
        bot = make_bot(api, RateLimitMiddleware(redis, FAST))
        api.fail_with_retry_after(7, retry_after=2)
        first = asyncio.create_task(bot.send_message(7, "first"))
        peek = FloodLimiter(redis, bot.id, FAST)

        async def chat_held() -> bool:  # max_wait=-1: tells the turn, books nothing
            return (await peek.reserve(7, max_wait=-1)).wait > 1.0

        await wait_for(chat_held, message="the 429 to hold chat 7")

        other_process = RateLimitMiddleware(redis, FAST, max_flood_wait=0.5)
        other_bot = make_bot(api, other_process)
        with pytest.raises(TelegramRetryAfter) as raised:
            await other_bot.send_message(7, "from another process")
        await first

    assert raised.value.retry_after in (2, 3)  # after the hold and the first request's retry
    assert other_process.stats.refused == 1
    assert [m.text for m in api.sent_to(7)] == ["first"]


async def test_a_429_longer_than_max_flood_wait_reaches_the_caller(
    redis: Redis, make_bot: Callable[..., Bot]
) -> None:
    async with TelegramBotAPIStandIn() as api:
        middleware = RateLimitMiddleware(redis, FAST, max_flood_wait=10)
        bot = make_bot(api, middleware)
        api.fail_with_retry_after(7, retry_after=30)

        with pytest.raises(TelegramRetryAfter) as raised:
            await bot.send_message(7, "hi")
        with pytest.raises(TelegramRetryAfter) as held:
            await bot.send_message(7, "again")  # Redis holds the chat: Telegram is not asked

    assert raised.value.retry_after == 30
    assert 29 <= held.value.retry_after <= 30
    assert api.calls["sendMessage"] == 1
    assert middleware.stats.flood_raised == 1
    assert middleware.stats.refused == 1


async def test_a_turn_beyond_max_flood_wait_is_refused_without_asking_telegram(
    redis: Redis, make_bot: Callable[..., Bot]
) -> None:
    async with TelegramBotAPIStandIn() as api:
        middleware = RateLimitMiddleware(redis, TelegramLimits(), max_flood_wait=0.5)
        bot = make_bot(api, middleware)
        await bot.send_message(7, "one")

        with pytest.raises(TelegramRetryAfter) as raised:
            await bot.send_message(7, "two")  # 1.03 s away
        await bot.send_message(8, "another chat")  # its turn was given back: no wait

    assert raised.value.retry_after == 2
    assert [m.text for m in api.sent] == ["one", "another chat"]
    assert middleware.stats.refused == 1


async def test_waiting_behind_the_chats_earlier_requests_counts_toward_max_flood_wait(
    redis: Redis, make_bot: Callable[..., Bot]
) -> None:
    async with TelegramBotAPIStandIn() as api:
        middleware = RateLimitMiddleware(redis, TelegramLimits(), max_flood_wait=1.5)
        bot = make_bot(api, middleware)

        results = await asyncio.gather(
            *(bot.send_message(7, f"m{i}") for i in range(3)), return_exceptions=True
        )

    assert [m.text for m in api.sent] == ["m0", "m1"]  # at 0 and 1.03 s
    assert isinstance(results[2], TelegramRetryAfter)  # would go at 2.06 s: beyond 1.5 s
    assert results[2].retry_after == 2
    assert middleware.stats.refused == 1


async def test_a_migrated_group_receives_at_its_new_id(
    redis: Redis, make_bot: Callable[..., Bot], caplog: pytest.LogCaptureFixture
) -> None:
    async with TelegramBotAPIStandIn() as api:
        middleware = RateLimitMiddleware(redis, FAST)
        bot = make_bot(api, middleware)
        api.migrate_chat(-5, -1_000_000_000_005)

        with caplog.at_level(logging.WARNING, logger="codex_bot.telegram"):
            message = await bot.send_message(-5, "still here")

    assert message.chat.id == -1_000_000_000_005
    assert [m.text for m in api.sent_to(-1_000_000_000_005)] == ["still here"]
    assert middleware.stats.migrations == 1
    [record] = [r for r in caplog.records if r.name.startswith("codex_bot.telegram")]
    assert record.levelno == logging.WARNING
    assert "-1000000000005" in record.getMessage()


async def test_requests_that_send_nothing_to_a_chat_are_never_paced(
    redis: Redis, make_bot: Callable[..., Bot]
) -> None:
    async with TelegramBotAPIStandIn() as api:
        middleware = RateLimitMiddleware(redis, TelegramLimits(), max_flood_wait=5)
        bot = make_bot(api, middleware)
        await FloodLimiter(redis, bot.id).hold(None, 30)  # the whole bot is held
        before = await scripts_run(redis)
        started = time.monotonic()

        await bot.get_me()
        await bot.send_chat_action(7, "typing")
        await bot.answer_callback_query("query-1")
        await bot.set_webhook("https://example.invalid/hook")
        await bot.delete_webhook()

        elapsed = time.monotonic() - started
        assert await scripts_run(redis) == before
        with pytest.raises(TelegramRetryAfter):
            await bot.send_message(7, "paced")
    assert elapsed < 5  # nowhere near the 30 s the bot is held for
    assert middleware.stats.paced == 1


async def test_media_groups_photos_copies_forwards_and_edits_are_paced(
    redis: Redis, make_bot: Callable[..., Bot]
) -> None:
    limits = TelegramLimits(per_second=20, per_chat_per_second=10, per_group_per_minute=600)
    async with TelegramBotAPIStandIn(limits=limits) as api:
        middleware = RateLimitMiddleware(redis, limits)
        bot = make_bot(api, middleware)
        album = [InputMediaPhoto(media=f"photo-{i}") for i in range(10)]

        await asyncio.gather(
            bot.send_media_group(1, album),  # 10 messages
            bot.send_media_group(2, album),  # 10 more: a second at 20/s
            bot.send_photo(3, "photo-x", caption="x"),
            bot.copy_message(3, from_chat_id=1, message_id=1),
            bot.forward_message(-4, from_chat_id=1, message_id=1),
        )
        sent = await bot.send_message(5, "text")
        await bot.edit_message_text("edited", chat_id=5, message_id=sent.message_id)

    assert api.flood_answers == 0
    assert len(api.sent) == 25
    assert middleware.stats.paced == 7


async def test_paid_broadcasts_go_at_the_paid_rate(
    redis: Redis, make_bot: Callable[..., Bot]
) -> None:
    limits = TelegramLimits(per_second=5, paid_per_second=500)
    async with TelegramBotAPIStandIn(limits=limits) as api:
        bot = make_bot(api, RateLimitMiddleware(redis, limits))
        started = time.monotonic()

        await asyncio.gather(
            *(bot.send_message(chat, "paid", allow_paid_broadcast=True) for chat in range(1, 101))
        )

        elapsed = time.monotonic() - started
    assert api.flood_answers == 0
    assert elapsed < 5  # 100 messages at 5/s would take 20 s


async def test_while_redis_is_down_messages_go_out_unpaced_and_429s_are_still_absorbed(
    make_bot: Callable[..., Bot], caplog: pytest.LogCaptureFixture
) -> None:
    with RedisServer() as server:
        redis = Redis.from_url(server.url)
        async with TelegramBotAPIStandIn() as api:
            middleware = RateLimitMiddleware(redis, TelegramLimits())
            bot = make_bot(api, middleware)
            await bot.send_message(7, "paced")
            await asyncio.to_thread(server.stop)
            api.fail_with_retry_after(8, retry_after=1)

            with caplog.at_level(logging.INFO, logger="codex_bot.telegram"):
                await asyncio.gather(*(bot.send_message(7, f"u{i}") for i in range(3)))
                await bot.send_message(8, "after a 429")
                unpaced = middleware.stats.unpaced
                await asyncio.to_thread(server.start)

                async def paced_again() -> bool:
                    await bot.send_message(9, "probe")
                    return middleware.budget.reachable

                await wait_for(paced_again, timeout=5, message="pacing to resume")
        await redis.aclose()

    assert [m.text for m in api.sent_to(7)] == ["paced", "u0", "u1", "u2"]
    assert [m.text for m in api.sent_to(8)] == ["after a 429"]
    assert unpaced >= 4
    assert middleware.stats.flood_absorbed == 1
    logged = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name.startswith("codex_bot.telegram")
    ]
    assert [level for level, _ in logged] == [logging.WARNING, logging.INFO, logging.INFO]
    assert "Redis unreachable" in logged[0][1]
    assert "reachable again" in logged[2][1]


async def test_a_redis_that_does_not_answer_counts_as_down(
    make_bot: Callable[..., Bot],
) -> None:
    received = bytearray()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):  # accepts the connection, never answers
            received.extend(chunk)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis = Redis(host="127.0.0.1", port=port)
    async with TelegramBotAPIStandIn() as api:
        middleware = RateLimitMiddleware(redis, redis_timeout=0.2)
        bot = make_bot(api, middleware)
        started = time.monotonic()

        for chat in itertools.islice(itertools.count(1), 5):
            await bot.send_message(chat, "hi")

        elapsed = time.monotonic() - started
    await redis.aclose()
    server.close()
    await server.wait_closed()
    assert len(api.sent) == 5
    assert middleware.stats.unpaced == 5
    # one booking timed out after 0.2 s (in the connection's handshake), then Redis was left
    # alone for a while: one connection attempt, not five
    assert bytes(received).count(b"LIB-NAME") == 1
    assert elapsed < 5


@pytest.mark.parametrize(
    ("args", "options", "error", "message"),
    [
        ((None,), {}, TypeError, "needs the redis.asyncio client"),
        (("redis", "30"), {}, TypeError, "limits must be a TelegramLimits, got '30'"),
        (("redis", {"per_second": 30}), {}, TypeError, "limits must be a TelegramLimits"),
        (("redis",), {"redis_timeout": 0}, ValueError, "redis_timeout must be a finite number"),
        (("redis",), {"redis_timeout": -1}, ValueError, "redis_timeout must be a finite number"),
        (("redis",), {"max_flood_wait": -1}, ValueError, "max_flood_wait must be a finite"),
        (("redis",), {"max_flood_wait": "60"}, TypeError, "max_flood_wait must be a number"),
    ],
)
def test_nonsense_settings_are_refused_when_the_middleware_is_built(
    redis: Redis, args: tuple[object, ...], options: dict[str, object], error: type, message: str
) -> None:
    real = tuple(redis if arg == "redis" else arg for arg in args)
    with pytest.raises(error, match=re.escape(message)):
        RateLimitMiddleware(*real, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("same_object", [True, False])
async def test_installed_twice_it_paces_once_and_says_so(
    redis: Redis, make_bot: Callable[..., Bot], caplog: pytest.LogCaptureFixture, same_object: bool
) -> None:
    async with TelegramBotAPIStandIn(limits=FAST) as api:
        outer = RateLimitMiddleware(redis, FAST)
        inner = outer if same_object else RateLimitMiddleware(redis, FAST)
        bot = make_bot(api, outer)
        bot.session.middleware(inner)

        await asyncio.wait_for(
            asyncio.gather(*(bot.send_message(7, f"m{n}") for n in range(3))), timeout=10
        )

        assert [m.text for m in api.sent] == ["m0", "m1", "m2"]
    assert outer.stats.paced == 3  # the inner one passed them through, unpaced
    if not same_object:
        assert inner.stats.paced == 0
    warnings = [r for r in caplog.records if "installed twice" in r.getMessage()]
    assert len(warnings) == 1
