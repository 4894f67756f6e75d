"""A dead letter too large for Lua, moved back in three steps (reserve an id, add, finish), on
one Redis and on a Redis Cluster: a run stopped between any two steps and run again, or two
runs at once, add the event exactly once and never lose the letter."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

from codex_bot.ops import StreamOps
from codex_bot.ops.letters import replayed_fields
from codex_bot.ops.moves import RESERVATIONS_SUFFIX, LargeLetterMover
from codex_bot.testing import RedisClusterServer
from codex_bot.testing.redis_server import RedisServer

STREAM = "{big}:events"
DEAD = STREAM + ":dead"
FIELDS = 4_200  # 8,400 values: more than Lua's unpack takes


@pytest.fixture(
    scope="module",
    params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)],
)
def server(
    request: pytest.FixtureRequest, redis_binary: str | None
) -> Iterator[RedisServer | RedisClusterServer]:
    if os.environ.get("REDIS_URL"):
        pytest.skip("REDIS_URL: these tests start redis-servers of their own")
    group = RedisServer if request.param == "redis" else RedisClusterServer
    with group(binary=redis_binary) as started:
        yield started


@pytest.fixture
async def either_client(server: RedisServer | RedisClusterServer) -> AsyncIterator[Any]:
    """A client (bytes replies) of the module's one Redis or Redis Cluster, flushed."""
    if isinstance(server, RedisClusterServer):
        server.flushall()
        made: Any = RedisCluster.from_url(server.url)
    else:
        made = Redis.from_url(server.url)
        await made.flushall()
    yield made
    await made.aclose()


async def huge_letter(client: Any) -> tuple[str, list[bytes]]:
    """A letter with ``FIELDS`` fields in ``DEAD``; its id and the values its replay adds."""
    fields = {f"f{i}": f"v{i}" for i in range(FIELDS)}
    letter_id = (
        await client.xadd(
            DEAD, {"type": "big", **fields, "codex.dead.reason": "r", "codex.dead.stream": STREAM}
        )
    ).decode()
    [letter] = await StreamOps(client, STREAM).dead_letters()
    values = [item for pair in replayed_fields(letter).items() for item in pair]
    return letter_id, values


async def replays(client: Any, letter_id: str) -> list[bytes]:
    """Ids of the entries of ``STREAM`` replayed from ``letter_id``."""
    found = await client.xrange(STREAM)
    return [e for e, f in found if f.get(b"codex.replayed_from") == letter_id.encode()]


async def test_a_huge_letter_is_moved_once(either_client: Any) -> None:
    await huge_letter(either_client)
    ops = StreamOps(either_client, STREAM)
    [letter] = await ops.dead_letters()
    first = await ops.dead.replay_one(letter)
    again = await ops.dead.replay_one(letter)
    assert first.entry_id is not None
    assert again.entry_id is None
    [(entry_id, fields)] = await either_client.xrange(STREAM)
    assert entry_id.decode() == first.entry_id
    assert len(fields) == FIELDS + 2  # type, the fields, codex.replayed_from
    assert await either_client.xlen(DEAD) == 0
    assert not await either_client.exists(DEAD + RESERVATIONS_SUFFIX)


async def test_stopped_after_the_reservation(either_client: Any) -> None:
    letter_id, _ = await huge_letter(either_client)
    mover = LargeLetterMover(either_client)
    reserved = await mover.reserve(STREAM, DEAD, letter_id)
    # newer events take the reserved id's place
    await either_client.xadd(STREAM, {"type": "meanwhile"})

    result = await StreamOps(either_client, STREAM).replay()

    [done] = result.replayed
    assert done.entry_id != reserved.entry_id
    assert [e.decode() for e in await replays(either_client, letter_id)] == [done.entry_id]
    assert await either_client.xlen(DEAD) == 0


async def test_stopped_after_the_add(either_client: Any) -> None:
    letter_id, values = await huge_letter(either_client)
    mover = LargeLetterMover(either_client)
    reserved = await mover.reserve(STREAM, DEAD, letter_id)
    assert await mover.add(STREAM, reserved.entry_id, values)
    # the XADD of a run killed while it was on the wire arrives late: refused, not added twice
    assert not await mover.add(STREAM, reserved.entry_id, values)

    result = await StreamOps(either_client, STREAM).replay()

    assert [done.entry_id for done in result.replayed] == [reserved.entry_id]
    assert [e.decode() for e in await replays(either_client, letter_id)] == [reserved.entry_id]
    assert await either_client.xlen(DEAD) == 0
    assert not await either_client.exists(DEAD + RESERVATIONS_SUFFIX)


async def test_an_entry_of_another_letter_at_the_reserved_id_is_not_taken_for_its_own(
    either_client: Any,
) -> None:
    letter_id, _ = await huge_letter(either_client)
    reserved = await LargeLetterMover(either_client).reserve(STREAM, DEAD, letter_id)
    # a second replay reserved the same id for another letter and added it first
    await either_client.xadd(
        STREAM, {"type": "other", "codex.replayed_from": "1-0"}, id=reserved.entry_id
    )

    result = await StreamOps(either_client, STREAM).replay()

    assert len(result.replayed) == 1
    assert len(await replays(either_client, letter_id)) == 1
    assert await either_client.xlen(DEAD) == 0


async def test_an_added_entry_trimmed_before_the_move_finished_is_added_again(
    either_client: Any,
) -> None:
    letter_id, values = await huge_letter(either_client)
    mover = LargeLetterMover(either_client)
    reserved = await mover.reserve(STREAM, DEAD, letter_id)
    assert await mover.add(STREAM, reserved.entry_id, values)
    await either_client.xadd(STREAM, {"type": "later"})
    await either_client.xtrim(STREAM, maxlen=1)  # the added entry is gone: it cannot be told apart

    result = await StreamOps(either_client, STREAM).replay()  # at-least-once: added again, not lost

    assert len(result.replayed) == 1
    assert len(await replays(either_client, letter_id)) == 1
    assert await either_client.xlen(DEAD) == 0
