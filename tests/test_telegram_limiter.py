"""The flood-budget Lua script, driven through ``FloodLimiter`` on a real Redis.

Most tests pass a fixed clock (``now_us``) so turns are exact; the script then never reads
``TIME``. Tests marked so use Redis's clock.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from codex_bot.telegram import FloodLimiter, TelegramLimits
from tests.conftest import wait_for

T0 = 1_000_000_000_000  # a fixed clock, in microseconds
LIMITS = TelegramLimits()  # Telegram's: 30/s, 1/s per chat, 20/min per group, margin 3%
STEP = math.ceil(1.03e6 / 30) / 1e6  # the script counts whole microseconds
CHAT_STEP = 1.03


def limiter(redis: Redis, limits: TelegramLimits = LIMITS, bot_id: int = 42) -> FloodLimiter:
    return FloodLimiter(redis, bot_id, limits)


async def waits(lim: FloodLimiter, chats: list[int | str], **kwargs: object) -> list[float]:
    return [(await lim.reserve(chat, now_us=T0, **kwargs)).wait for chat in chats]  # type: ignore[arg-type]


async def test_the_bot_wide_budget_spaces_messages_to_different_chats(redis: Redis) -> None:
    got = await waits(limiter(redis), list(range(1, 61)))

    assert got == pytest.approx([i * STEP for i in range(60)], abs=2e-6)
    in_first_second = [w for w in got if w < 1.0]
    assert len(in_first_second) == 30  # 30 starts in [0, 1): 0, 34.3 ms, ..., 995.7 ms


async def test_a_private_chat_gets_one_message_per_chat_interval(redis: Redis) -> None:
    got = await waits(limiter(redis), [7, 7, 7])

    assert got == pytest.approx([0, CHAT_STEP, 2 * CHAT_STEP], abs=2e-6)


async def test_a_group_gets_at_most_its_count_in_any_window(redis: Redis) -> None:
    limits = TelegramLimits(per_second=1000, per_group_per_minute=3, per_chat_per_second=100)
    lim = limiter(redis, limits)

    got = await waits(lim, [-5, -5, -5, -5, -5], max_wait=300)

    spacing = 1.03 / 100
    window = 60 * 1.03
    assert got[:3] == pytest.approx([0, spacing, 2 * spacing], abs=2e-6)
    assert got[3] == pytest.approx(window, abs=2e-6)  # the first has left the window
    assert got[4] == pytest.approx(spacing + window, abs=2e-6)


async def test_a_channel_username_counts_as_a_group_whatever_its_case(redis: Redis) -> None:
    limits = TelegramLimits(per_second=1000, per_group_per_minute=2, per_chat_per_second=100)

    got = await waits(limiter(redis, limits), ["@News", "@news", "@NEWS"], max_wait=300)

    assert got[2] == pytest.approx(60 * 1.03, abs=2e-6)


async def test_groups_are_also_spaced_by_the_chat_interval(redis: Redis) -> None:
    got = await waits(limiter(redis), [-5, -5])

    assert got == pytest.approx([0, CHAT_STEP], abs=2e-6)


async def test_paid_broadcasts_use_their_own_budget(redis: Redis) -> None:
    lim = limiter(redis)

    free = await waits(lim, [1, 2, 3])
    paid = await waits(lim, [4, 5, 6], paid=True)
    more_free = await waits(lim, [7])

    assert free == pytest.approx([0, STEP, 2 * STEP], abs=2e-6)
    assert paid == pytest.approx([0, 1.03 / 1000, 2 * 1.03 / 1000], abs=2e-6)
    assert more_free == pytest.approx([3 * STEP], abs=2e-6)  # paid ones took nothing from it


async def test_paid_broadcasts_still_respect_the_chat(redis: Redis) -> None:
    lim = limiter(redis)

    await lim.reserve(9, now_us=T0)
    turn = await lim.reserve(9, paid=True, now_us=T0)

    assert turn.wait == pytest.approx(CHAT_STEP, abs=2e-6)


async def test_a_media_group_counts_one_message_per_item(redis: Redis) -> None:
    lim = limiter(redis)

    album = await lim.reserve(1, cost=10, now_us=T0)
    after = await lim.reserve(2, now_us=T0)
    same_chat = await lim.reserve(1, now_us=T0)

    assert album.wait == 0
    assert after.wait == pytest.approx(10 * STEP, abs=2e-6)
    assert same_chat.wait == pytest.approx(10 * CHAT_STEP, abs=2e-6)


async def test_a_media_group_in_a_group_fills_the_group_window(redis: Redis) -> None:
    limits = TelegramLimits(per_second=1000, per_group_per_minute=12, per_chat_per_second=100)
    lim = limiter(redis, limits)

    await lim.reserve(-5, cost=10, now_us=T0)
    two_more = await lim.reserve(-5, cost=2, now_us=T0)
    one_more = await lim.reserve(-5, now_us=T0, max_wait=300)

    assert two_more.wait == pytest.approx(10 * 0.0103, abs=2e-6)
    assert one_more.wait == pytest.approx(60 * 1.03, abs=2e-6)


async def test_a_turn_beyond_max_wait_is_refused_and_books_nothing(redis: Redis) -> None:
    lim = limiter(redis)
    await lim.reserve(7, now_us=T0)

    refused = await lim.reserve(7, max_wait=0.5, now_us=T0)
    other_chat = await lim.reserve(8, now_us=T0)
    booked = await lim.reserve(7, max_wait=5, now_us=T0)

    assert not refused.granted
    assert refused.wait == pytest.approx(CHAT_STEP, abs=2e-6)
    assert other_chat.wait == pytest.approx(STEP, abs=2e-6)  # not 2 * STEP: nothing was taken
    assert booked.granted
    assert booked.wait == pytest.approx(CHAT_STEP, abs=2e-6)  # the refused turn was given back


async def test_a_chat_that_waits_leaves_the_earlier_turns_to_other_chats(redis: Redis) -> None:
    lim = limiter(redis)
    await lim.reserve(7, now_us=T0)
    second_to_7 = await lim.reserve(7, now_us=T0)

    others = await waits(lim, list(range(100, 160)))

    assert second_to_7.wait == pytest.approx(CHAT_STEP, abs=2e-6)
    # the other chats fill every free turn, before and after the one chat 7 booked
    starts = sorted([0.0, second_to_7.wait, *others])
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= STEP - 2e-6
    assert starts[-1] < 62 * STEP  # 62 messages in about 62 turns: nothing was pushed back
    assert others[0] == pytest.approx(STEP, abs=2e-6)


async def test_a_request_landing_on_a_booked_turn_takes_the_next_free_one(redis: Redis) -> None:
    lim = limiter(redis)
    await lim.reserve(7, now_us=T0)
    booked = await lim.reserve(7, now_us=T0)  # at CHAT_STEP, left in the schedule

    at_that_time = await lim.reserve(8, now_us=T0 + int(CHAT_STEP * 1_000_000))

    assert booked.wait == pytest.approx(CHAT_STEP, abs=2e-6)
    assert at_that_time.wait == pytest.approx(STEP, abs=2e-6)


async def test_a_429_hold_delays_the_chat_only(redis: Redis) -> None:
    lim = limiter(redis)

    await lim.hold(7, 5.0)
    held = await lim.reserve(7, now_us=None)
    other = await lim.reserve(8)

    assert held.wait == pytest.approx(5.0, abs=0.05)
    assert other.wait < 0.1


async def test_429s_for_two_chats_at_once_hold_the_whole_bot(redis: Redis) -> None:
    lim = limiter(redis)

    await lim.hold(7, 3.0)
    await lim.hold(8, 3.0)
    third_chat = await lim.reserve(9)

    assert third_chat.wait == pytest.approx(3.0, abs=0.05)


async def test_one_chats_long_hold_holds_the_whole_bot_only_as_long_as_the_other(
    redis: Redis,
) -> None:
    lim = limiter(redis)

    await lim.hold(7, 3.0)
    await lim.hold(8, 300.0)  # a group flooded for minutes
    third_chat = await lim.reserve(9)
    flooded = await lim.reserve(8, max_wait=600.0)

    assert third_chat.wait == pytest.approx(3.0, abs=0.05)
    assert flooded.wait == pytest.approx(300.0, abs=0.05)


async def test_429s_for_two_chats_in_turn_hold_the_bot_from_the_later_one(
    redis: Redis,
) -> None:
    lim = limiter(redis)
    t0 = 1_700_000_000_000_000

    await lim.reserve(7, max_wait=-1, hold=1.0, now_us=t0)
    await lim.reserve(8, max_wait=-1, hold=1.0, now_us=t0 + 500_000)  # Telegram, 0.5 s later
    third_chat = await lim.reserve(9, now_us=t0 + 500_000)

    assert third_chat.wait == pytest.approx(1.0, abs=1e-6)  # not 0.5: the later 429 counts


async def test_a_429_without_a_chat_holds_the_whole_bot(redis: Redis) -> None:
    lim = limiter(redis)

    await lim.hold(None, 2.0)
    any_chat = await lim.reserve(9)

    assert any_chat.wait == pytest.approx(2.0, abs=0.05)


async def test_turns_use_the_redis_clock(redis: Redis) -> None:
    lim = limiter(redis)

    first, second = await lim.reserve(7), await lim.reserve(7)

    assert first.wait == 0
    # the second call comes a little later by Redis's clock, so its wait is a little shorter
    assert CHAT_STEP - 0.1 < second.wait <= CHAT_STEP


async def test_keys_share_one_cluster_slot_and_idle_chats_leave_nothing(redis: Redis) -> None:
    lim = limiter(redis, TelegramLimits(per_chat_per_second=50), bot_id=77)
    await lim.reserve(7)
    await lim.reserve(-5)

    keys = sorted(await redis.keys("*"))
    assert keys == ["codex:tg:{77}:bot", "codex:tg:{77}:chat:-5", "codex:tg:{77}:chat:7"]
    assert 0 < await redis.pttl("codex:tg:{77}:chat:7") <= 1_021  # its 20 ms + 1 s
    assert 60_000 < await redis.pttl("codex:tg:{77}:chat:-5") <= 62_900  # the group window


async def test_a_million_chats_do_not_mean_a_million_keys(redis: Redis) -> None:
    lim = limiter(redis, TelegramLimits(per_second=1e6, per_chat_per_second=1e3))
    for chat in range(1, 201):
        await lim.reserve(chat, now_us=T0)

    async def only_the_bot_key_left() -> bool:
        return await redis.keys("*") == ["codex:tg:{42}:bot"]

    # a chat's key lives while it can delay someone, plus a second, on Redis's own clock
    await wait_for(only_the_bot_key_left, timeout=3, message="idle chat keys to expire")


@dataclass
class Booking:
    chat: int | str | None
    start: int  # microseconds
    cost: int
    paid: bool


Op = tuple[int, int | str | None, int, bool, float, float]
requests = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=400_000),  # microseconds since the previous request
        st.sampled_from([1, 2, 3, -4, -5, "@chan", None]),
        st.integers(min_value=1, max_value=4),  # cost
        st.booleans(),  # paid
        st.sampled_from([0.2, 2.0, 300.0]),  # max_wait
        st.sampled_from([0.0, 0.0, 0.0, 1.5]),  # hold: a 429's retry_after
    ),
    min_size=1,
    max_size=40,
)
SMALL = TelegramLimits(per_second=10, per_chat_per_second=2, per_group_per_minute=5, margin=0)
_bot_ids = itertools.count(1000)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_property_every_schedule_keeps_every_limit(redis_server: object, ops: list[Op]) -> None:
    bookings = asyncio.run(_book(redis_server.url, ops))  # type: ignore[attr-defined]

    for paid, step in ((False, 100_000), (True, 1_000)):  # SMALL's intervals in microseconds
        budget = sorted((b.start, b.start + b.cost * step) for b in bookings if b.paid == paid)
        for (_, end), (start, _) in itertools.pairwise(budget):
            assert start >= end, "two bookings overlap in one budget"
    by_chat: dict[int | str, list[Booking]] = defaultdict(list)
    for booking in bookings:
        if booking.chat is not None:
            by_chat[booking.chat].append(booking)
    for chat, chat_bookings in by_chat.items():
        for a, b in itertools.pairwise(chat_bookings):
            assert b.start >= a.start + a.cost * 500_000  # in request order, spaced
        if chat in (-4, -5, "@chan"):
            for b in chat_bookings:
                window = [a for a in chat_bookings if b.start - 60_000_000 < a.start <= b.start]
                assert sum(min(a.cost, 5) for a in window) <= 5


async def _book(url: str, ops: list[Op]) -> list[Booking]:
    async with Redis.from_url(url) as redis:
        lim = FloodLimiter(redis, next(_bot_ids), SMALL)
        now, bookings = T0, []
        for advance, chat, cost, paid, max_wait, hold in ops:
            now += advance
            turn = await lim.reserve(
                chat, cost=cost, paid=paid, max_wait=max_wait, hold=hold, now_us=now
            )
            assert turn.wait >= hold - 1e-6  # a held chat (or bot) waits out the hold
            assert turn.granted == (turn.wait <= max_wait)
            if turn.granted:
                bookings.append(Booking(chat, now + round(turn.wait * 1e6), cost, paid))
        return bookings
