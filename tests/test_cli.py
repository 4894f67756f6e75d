"""The installed ``codex-bot`` command, run as a user runs it, against a real redis-server
holding what the real processor left behind: pending entries, dead letters, retries."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

from redis.asyncio import Redis

from codex_bot.redis import ArqRetryScheduler, StreamProducer
from codex_bot.testing.redis_server import RedisServer, free_port
from tests._bad_day import (
    BLOCKED_CHAT,
    CODEX_BOT,
    GROUP,
    Bot,
    Result,
    bad_day,
    cli,
    consuming,
)
from tests._helpers import arq_pool
from tests.conftest import nothing_pending, pending_count, wait_for

FORBIDDEN = "the bot may not write to this chat"
PASSWORD = "pw-Zq81x"


def one_line_error(result: Result) -> str:
    """The single line a failing command prints on stderr (no traceback, exit status 2)."""
    assert result.code == 2, (result.code, result.out, result.err)
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


async def test_stats_show_the_stream_its_group_dead_letters_and_retries(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    day = await bad_day(redis, redis_server.url, stream)
    late = [await redis.xadd(stream, {"type": "late"}) for _ in range(3)]

    data = (await cli("stats", "--stream", stream, "--json", url=redis_server.url)).json()

    assert data["stream"] == {
        "name": stream,
        "length": 2 + 1 + 2 + 1 + 3,
        "first_id": day.dead_orders[0],
        "last_id": late[-1],
    }
    [group] = data["groups"]
    assert (group["name"], group["lag"], group["pending"]) == (GROUP, 3, 2)
    assert group["oldest_pending_id"] == day.stuck[0]
    assert group["oldest_pending_age_ms"] >= 0
    assert [(c["name"], c["pending"]) for c in group["consumers"]] == [("c1", 2)]
    assert data["dead_letters"]["count"] == 3
    reasons = [(r["reason"], r["count"]) for r in data["dead_letters"]["reasons"]]
    assert reasons[0] == (FORBIDDEN, 2)
    assert reasons[1][0].startswith("entry has no 'type' field")
    assert (data["retries"]["queue"], data["retries"]["waiting"]) == ("arq:queue", 1)

    text = await cli("stats", "--stream", stream, url=redis_server.url)
    assert text.code == 0, text.err
    assert f"stream {stream}: 9 entries" in text.out
    assert "GROUP  LAG  PENDING  OLDEST PENDING" in text.out
    assert f"dead letters in {stream}:dead: 3" in text.out
    assert f"2      {FORBIDDEN}" in text.out
    assert "retries waiting in arq:queue: 1 (next due in " in text.out


async def test_stats_of_a_group_nobody_has_read_from_says_it_has_no_consumers(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    await redis.xadd(stream, {"type": "order.paid"})
    await redis.xgroup_create(stream, GROUP, id="0")

    text = await cli("stats", "--stream", stream, url=redis_server.url)

    assert text.code == 0, text.err
    assert f"consumers of {GROUP}: none yet" in text.out
    assert "NAME  PENDING  IDLE" not in text.out


async def test_pending_lists_what_a_stopped_consumer_left(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    day = await bad_day(redis, redis_server.url, stream, orders=0, untyped=0, retried=0)

    rows = (await cli("pending", "--stream", stream, "--json", url=redis_server.url)).json()

    assert [(r["id"], r["consumer"], r["deliveries"], r["event_type"]) for r in rows] == [
        (entry_id, "c1", 1, "report.ready") for entry_id in day.stuck
    ]
    text = (await cli("pending", "--stream", stream, url=redis_server.url)).out
    assert text.splitlines()[0].split() == ["ID", "CONSUMER", "IDLE", "DELIVERIES", "TYPE"]
    assert text.splitlines()[1].split()[::3] == [day.stuck[0], "1"]


async def test_dead_list_and_show_with_filters(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    day = await bad_day(redis, redis_server.url, stream, stuck=0, retried=0)
    url = redis_server.url

    async def listed(*filters: str) -> list[str]:
        letters = (
            await cli("dead", "list", "--stream", stream, "--json", *filters, url=url)
        ).json()
        return [letter["source_id"] for letter in letters]

    # the processor parks entries concurrently: letters are in the order they failed
    assert sorted(await listed()) == sorted([*day.dead_orders, *day.untyped])
    assert sorted(await listed("--type", "order.paid")) == day.dead_orders
    assert sorted(await listed("--handler", "send")) == day.dead_orders
    assert await listed("--handler", "notify") == []
    assert await listed("--reason", "no 'type'") == day.untyped
    assert len(await listed("--limit", "1")) == 1
    assert await listed("--since", "1h") == await listed("--until", "0s")
    assert await listed("--since", "2100-01-01") == []

    orders = await cli(
        "dead", "list", "--stream", stream, "--type", "order.paid", "--json", url=url
    )
    first = orders.json()[0]
    assert first["handler"] == day.bot.send_name
    assert first["reason"] == FORBIDDEN
    assert first["error"] == "TelegramForbiddenError: Forbidden: bot was blocked by the user"
    assert first["attempts"] == 1
    assert first["fields"]["chat_id"] == f"json:{BLOCKED_CHAT}"
    shown = (await cli("dead", "show", first["id"], "--stream", stream, "--json", url=url)).json()
    assert shown == first

    table = (await cli("dead", "list", "--stream", stream, url=url)).out.splitlines()
    assert table[0].split()[:4] == ["ID", "TIME", "(UTC)", "TYPE"]
    assert len(table) == 4
    text = (await cli("dead", "show", first["id"], "--stream", stream, url=url)).out
    assert f"reason     {FORBIDDEN}" in text
    assert f"  chat_id = json:{BLOCKED_CHAT}" in text
    missing = await cli("dead", "show", "1-0", "--stream", stream, url=url)
    assert one_line_error(missing) == f"Error: no dead letter 1-0 in {stream}:dead"
    garbage = await cli("dead", "show", "garbage", "--stream", stream, url=url)
    assert one_line_error(garbage) == (
        "Error: 'garbage' is not a stream entry id (like 1700000000000-0)"
    )


async def test_a_replay_runs_only_the_handler_that_failed(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    async with arq_pool(redis_server.url) as pool:
        bot = Bot(ArqRetryScheduler(pool))
        async with consuming(redis, stream, bot):
            first_id = await StreamProducer(redis, stream).add_event(
                "order.paid", {"chat_id": BLOCKED_CHAT, "text": "paid"}
            )
            await wait_for(lambda: redis.xlen(stream + ":dead"), message="dead letter")
            [(dead_id, _)] = await redis.xrange(stream + ":dead")
            bot.blocked.clear()  # the user unblocked the bot; the operator replays

            result = await cli("dead", "replay", "--stream", stream, "--yes", url=redis_server.url)

            assert result.code == 0, result.err
            assert result.out.splitlines()[-1] == "replayed 1 dead letter"
            await wait_for(lambda: bot.count("send") == 2, message="the replay")
            await wait_for(lambda: nothing_pending(redis, stream), message="acked")

    assert bot.count("notify") == 1  # the handler that had succeeded did not run again
    assert bot.calls["send"][1] == {"type": "order.paid", "chat_id": BLOCKED_CHAT, "text": "paid"}
    assert await redis.xlen(stream + ":dead") == 0
    [_, (replay_id, fields)] = await redis.xrange(stream)
    assert fields == {
        "type": "order.paid",
        "chat_id": f"json:{BLOCKED_CHAT}",
        "text": "paid",
        "codex.handlers": f'json:["{bot.send_name}"]',
        "codex.origin_id": first_id,
        "codex.replayed_from": dead_id,
    }
    assert result.out.startswith(f"{dead_id} -> {stream} {replay_id} (order.paid) for ")


async def test_an_interrupted_replay_run_again_duplicates_nothing_and_loses_nothing(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    await bad_day(redis, redis_server.url, stream, orders=30, untyped=0, stuck=0, retried=0)
    letters = [letter_id for letter_id, _ in await redis.xrange(stream + ":dead")]
    dead = stream + ":dead"
    replay = [str(CODEX_BOT), "dead", "replay", "--stream", stream, "--yes"]

    process = await asyncio.create_subprocess_exec(
        *replay, "--rate", "20", env={**os.environ, "REDIS_URL": redis_server.url}
    )
    await wait_for(lambda: _xlen_at_most(redis, dead, 25), message="a few letters replayed")
    process.send_signal(signal.SIGKILL)
    await process.wait()
    left = await redis.xlen(dead)
    assert 0 < left < 30

    again = await cli("dead", "replay", "--stream", stream, "--yes", url=redis_server.url)
    assert again.code == 0, again.err
    assert again.out.splitlines()[-1] == f"replayed {left} dead letters"
    third = await cli("dead", "replay", "--stream", stream, "--yes", url=redis_server.url)
    assert third.out.strip() == "no dead letters match"

    replayed = [f.get("codex.replayed_from") for _, f in await redis.xrange(stream)]
    assert sorted(filter(None, replayed)) == sorted(letters)
    assert await redis.xlen(dead) == 0


async def test_ctrl_c_during_a_replay_says_how_far_it_got(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    await bad_day(redis, redis_server.url, stream, orders=30, untyped=0, stuck=0, retried=0)
    dead = stream + ":dead"
    process = await asyncio.create_subprocess_exec(
        str(CODEX_BOT), "dead", "replay", "--stream", stream, "--yes", "--rate", "10",
        env={**os.environ, "REDIS_URL": redis_server.url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await wait_for(lambda: _xlen_at_most(redis, dead, 27), message="a few letters replayed")
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 20)

    assert process.returncode == 130
    moved = 30 - await redis.xlen(dead)
    last = err.decode().strip().splitlines()[-1]
    # a letter whose script ran as Ctrl-C came, before its reply was read, is not counted
    assert last in {
        f"interrupted: {done} of 30 dead letters replayed; run the same command again for "
        "the rest (no letter is replayed twice)"
        for done in (moved, moved - 1)
    }
    assert "Traceback" not in err.decode()


async def _xlen_at_most(redis: Redis, key: str, length: int) -> bool:
    return await redis.xlen(key) <= length


async def test_a_letter_that_is_not_utf8_is_replayed_byte_for_byte(
    redis_server: RedisServer, make_client: Callable[..., Redis], stream: str
) -> None:
    raw = make_client(redis_server.url)
    await raw.xadd(stream, {"type": "earlier"})
    original = {b"type": b"photo.ready", b"caption": b"caf\xe9 \xff\x00", b"\xfekey": b"\x80"}
    dead_id = await raw.xadd(
        stream + ":dead",
        {
            **original,
            b"codex.dead.reason": b"entry is not valid UTF-8",
            b"codex.dead.source_id": b"1-0",
            b"codex.dead.attempts": b"1",
            b"codex.dead.at": str(int(time.time() * 1000)).encode(),
            b"codex.dead.stream": stream.encode(),
        },
    )
    url = redis_server.url

    shown = (
        await cli("dead", "show", dead_id.decode(), "--stream", stream, "--json", url=url)
    ).json()
    assert shown["fields"]["caption"] == "caf\\xe9 \\xff\x00"
    assert shown["fields"]["\\xfekey"] == "\\x80"
    text = await cli("dead", "show", dead_id.decode(), "--stream", stream, url=url)
    assert "  caption = caf\\xe9 \\xff" in text.out
    result = await cli("dead", "replay", "--stream", stream, "--yes", "--json", url=url)

    [entry] = result.json()["replayed"]
    [(_, fields)] = await raw.xrange(stream, min=entry["entry_id"], max=entry["entry_id"])
    assert fields == {**original, b"codex.origin_id": b"1-0", b"codex.replayed_from": dead_id}


async def test_dry_run_and_a_refused_confirmation_change_nothing(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    day = await bad_day(redis, redis_server.url, stream, untyped=0, stuck=0, retried=0)
    url = redis_server.url
    before = await redis.xrange(stream)

    plan = (await cli("dead", "replay", "--stream", stream, "--dry-run", "--json", url=url)).json()
    refused = await cli("dead", "replay", "--stream", stream, stdin="n\n", url=url)

    assert [item["fields"]["codex.origin_id"] for item in plan] == day.dead_orders
    assert refused.code == 1
    assert "Replay 2 dead letters to " + stream in refused.err
    assert await redis.xrange(stream) == before
    assert await redis.xlen(stream + ":dead") == 2
    accepted = await cli("dead", "replay", "--stream", stream, stdin="y\n", url=url)
    assert accepted.out.splitlines()[-1] == "replayed 2 dead letters"


async def test_a_long_replay_shows_a_progress_bar(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    await bad_day(redis, redis_server.url, stream, orders=30, untyped=0, stuck=0, retried=0)
    result = await cli("dead", "replay", "--stream", stream, "--yes", url=redis_server.url)
    assert result.code == 0, result.err
    assert "replaying" in result.err  # 30 letters: more than the 24 lines of a terminal
    assert result.out.strip() == "replayed 30 dead letters"


async def test_purge_deletes_the_matching_letters(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    day = await bad_day(redis, redis_server.url, stream, stuck=0, retried=0)
    url = redis_server.url
    purge = ("dead", "purge", "--stream", stream)

    some = await cli(*purge, "--reason", "no 'type'", "--yes", url=url)
    assert some.out.strip() == "deleted 1 dead letter"
    left = [f["codex.dead.source_id"] for _, f in await redis.xrange(stream + ":dead")]
    assert left == day.dead_orders
    assert (await cli(*purge, "--yes", "--json", url=url)).json() == {"deleted": 2}
    assert await redis.xlen(stream + ":dead") == 0


async def test_prune_removes_idle_consumers_but_never_one_holding_entries(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    await bad_day(redis, redis_server.url, stream, orders=0, untyped=0, retried=0)
    await redis.xgroup_createconsumer(stream, GROUP, "gone-1")
    prune = ("consumers", "prune", "--stream", stream)

    kept_all = await cli(*prune, "--idle", "1d", url=redis_server.url)
    result = (await cli(*prune, "--idle", "0s", "--json", url=redis_server.url)).json()

    assert kept_all.out.strip() == "removed none"
    assert result == {"removed": ["gone-1"], "kept": ["c1"]}
    assert [c["name"] for c in await redis.xinfo_consumers(stream, GROUP)] == ["c1"]
    assert await pending_count(redis, stream) == 2


async def test_bad_urls_and_unreachable_redis_fail_in_one_line_without_the_password() -> None:
    port = free_port()
    cases = {
        f"foo://:{PASSWORD}@localhost/0": "Error: invalid Redis URL foo://:***@localhost/0",
        f"redis://:{PASSWORD}@[::1": "Error: invalid Redis URL redis://:***@[::1",
        f"redis://:{PASSWORD}@127.0.0.1:{port}/0": (
            f"Error: cannot reach Redis at redis://:***@127.0.0.1:{port}/0"
        ),
        f"redis://127.0.0.1:{port}/0?password={PASSWORD}": "Error: cannot reach Redis at ",
    }
    commands = (["stats"], ["dead", "replay", "--yes"], ["consumers", "prune", "--idle", "1h"])
    runs = [(url, start, args) for url, start in cases.items() for args in commands]
    results = await asyncio.gather(*(cli(*args, "--redis-url", url) for url, _, args in runs))
    for (url, start, _), result in zip(runs, results, strict=True):
        assert one_line_error(result).startswith(start), (url, result.err)
        assert PASSWORD not in result.out + result.err
    no_url = await cli("stats")
    assert one_line_error(no_url) == "Error: no Redis URL: pass --redis-url or set REDIS_URL"


async def test_a_redis_that_never_answers_is_reported_after_the_timeout() -> None:
    async def accept_and_stay_silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read()  # until the command gives up and closes
        writer.close()

    server = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    try:
        started = time.monotonic()
        result = await cli("stats", "--timeout", "0.5", "--redis-url", url, timeout=20)
        took = time.monotonic() - started
    finally:
        server.close()
        await server.wait_closed()

    assert one_line_error(result).startswith(
        f"Error: cannot reach Redis at redis://:***@127.0.0.1:{port}/0: Timeout"
    ), result.err
    assert PASSWORD not in result.out + result.err
    assert took < 15  # not the 30 s default, nor forever


async def test_a_wrong_password_is_reported_without_printing_it(
    fresh_server: RedisServer, make_client: Callable[..., Redis]
) -> None:
    await make_client(fresh_server.url).config_set("requirepass", PASSWORD)
    host = f"127.0.0.1:{fresh_server.port}"

    wrong = await cli("stats", "--redis-url", f"redis://:wrong-{PASSWORD}@{host}/0")
    right = await cli("stats", "--stream", "nothing-here", url=f"redis://:{PASSWORD}@{host}/0")

    assert "Error: Redis at redis://:***@" in one_line_error(wrong)
    assert PASSWORD not in wrong.out + wrong.err
    assert one_line_error(right) == "Error: stream 'nothing-here' does not exist"


async def test_unknown_streams_and_groups_fail_in_one_line(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    url = redis_server.url
    await redis.xadd(stream, {"type": "t"})
    await redis.xgroup_create(stream, GROUP, "0")
    for args in (["stats"], ["pending"], ["dead", "list"], ["dead", "replay", "--yes"]):
        missing = await cli(*args, "--stream", "nope", url=url)
        assert one_line_error(missing) == "Error: stream 'nope' does not exist"
    unknown = await cli("pending", "--stream", stream, "--group", "other", url=url)
    assert one_line_error(unknown) == (
        f"Error: stream '{stream}' has no consumer group 'other' (groups: {GROUP})"
    )
    await redis.xgroup_create(stream, "analytics", "0")
    several = await cli("consumers", "prune", "--idle", "1h", "--stream", stream, url=url)
    assert one_line_error(several) == (
        f"Error: stream '{stream}' has several consumer groups (analytics, {GROUP}): "
        "pick one with --group"
    )
    stats = (await cli("stats", "--stream", stream, "--json", url=url)).json()
    assert sorted(group["name"] for group in stats["groups"]) == ["analytics", GROUP]


async def test_a_url_redis_py_would_misread_is_refused_before_connecting() -> None:
    # redis-py reads "/abc" as no database at all and would use database 0
    port = free_port()
    for url, problem in {
        f"redis://:{PASSWORD}@127.0.0.1:{port}/abc": "has a database number that is not a number",
        f"redis://:{PASSWORD}@[::1:{port}/0": "is not a valid URL",
    }.items():
        result = await cli("stats", "--redis-url", url)
        line = one_line_error(result)
        assert line.startswith("Error: invalid Redis URL redis://:***@"), line
        assert line.endswith(problem) or f"{problem} (" in line, line
        assert PASSWORD not in result.out + result.err


async def test_dead_show_says_which_letters_no_handler_failed_for(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    from codex_bot.redis import BotRedisDispatcher, RedisStreamProcessor, RedisStreamStorage

    dispatcher = BotRedisDispatcher()  # handles no type at all
    dispatcher.setup(container=None)
    processor = RedisStreamProcessor(RedisStreamStorage(redis), stream, GROUP, "c1")
    processor.set_message_callback(dispatcher.process_message)
    await StreamProducer(redis, stream).add_event("order.typo", {"chat_id": 1})
    await redis.xadd(stream, {"chat_id": "2"})  # no type

    async def both_dead() -> bool:
        return await redis.xlen(f"{stream}:dead") == 2

    async with processor:
        await wait_for(both_dead, message="2 dead letters")
    letters = await redis.xrange(f"{stream}:dead")
    assert len(letters) == 2
    for letter_id, _ in letters:
        text = (await cli("dead", "show", letter_id, "--stream", stream, url=redis_server.url)).out
        # not "parked": a parked entry is one whose dead letter could NOT be written
        assert "handler    - (not a handler failure)" in text, text
