"""``make demo``: a broadcast through two bot replicas, with no token and no internet.

Starts a throwaway redis-server; a local stand-in for the Telegram Bot API that answers each
send after 100 ms and enforces Telegram's flood limits as Telegram does (30 messages a second
per bot, one a second per chat, 20 a minute per group; past them it answers 429); two
replicas of the example bot (two processors in one consumer group, two aiogram ``Bot``
sessions, each with the flood control, one Redis); an arq worker for retries; and a backend
that pushes notifications with ``SyncStreamProducer`` (see ``demo_scenario`` for which chats
get what and which misbehave). Prints a progress bar and a summary, shuts everything down,
exits 0, or 1 with the reason if something did not arrive in time.

    python -m example_bot.demo [--events 300] [--chats N] [--groups 3] [--per-group 5]
                               [--busy 10] [--timeout 45] [-v]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

import redis
from redis.asyncio import Redis

from codex_bot.redis import SyncStreamProducer
from codex_bot.redis.constants import DEAD_ERROR_FIELD, DEAD_LETTER_SUFFIX
from codex_bot.telegram import TelegramLimits
from codex_bot.testing import RedisServer, TelegramBotAPIStandIn
from example_bot.backend import notification
from example_bot.demo_replicas import Replica, build_replica, running
from example_bot.demo_scenario import Scenario, ScenarioError
from example_bot.demo_view import DemoFailedError, Progress, answer_rate, check, progress_line
from example_bot.demo_view import summary as write_summary
from example_bot.settings import Settings
from example_bot.worker import retry_pool, running_worker

LATENCY = 0.1
REPLICAS = 2
PUSH_SECONDS = 1.5
"""The backend spreads its events over this long, as requests to a web app would come."""


def settings_for(redis_url: str, replica: int) -> Settings:
    """The example bot's settings for one replica, tuned so retries come back within the demo."""
    return Settings(
        bot_token="42:DEMO-TOKEN",
        redis_url=redis_url,
        stream_name="demo_events",
        group="demo_bot",
        consumer_name=f"demo-bot-{replica}",
        max_concurrency=100,
        poll_interval=0.5,
        max_attempts=4,
        retry_delay=0.5,
        max_retry_delay=2.0,
        telegram_limits=TelegramLimits(),  # Telegram's own: 30/s, 1/s per chat, 20/min per group
    )


async def run_demo(redis_url: str, scenario: Scenario, limit: float, out: TextIO) -> Progress:
    """Run the replicas, the worker and the backend until every event is settled; then stop.

    Returns:
        Where the events are after shutdown.

    Raises:
        DemoFailedError: events were not all delivered or dead-lettered within ``limit`` s,
            or something is wrong after shutdown (see ``demo_view.check``).
    """
    started = time.monotonic()
    settings = [settings_for(redis_url, n) for n in range(1, REPLICAS + 1)]
    limits = settings[0].telegram_limits
    async with contextlib.AsyncExitStack() as stack:
        api = await stack.enter_async_context(TelegramBotAPIStandIn(latency=LATENCY, limits=limits))
        scenario.set_up(api)
        client = Redis.from_url(redis_url, socket_connect_timeout=5)
        stack.push_async_callback(client.aclose)
        arq_pool = retry_pool(settings[0])
        stack.push_async_callback(arq_pool.aclose)
        replicas = [
            build_replica(api, each, client, arq_pool, first=n == 0)
            for n, each in enumerate(settings)
        ]
        async with running_worker(settings[0], poll_delay=0.05) as worker:
            async with running(replicas):
                out.write(
                    f"{REPLICAS} bot replicas started; the backend pushes {scenario.events} "
                    "notifications\n"
                )
                pushed = [0]
                halt = threading.Event()
                backend = asyncio.create_task(
                    asyncio.to_thread(_push, redis_url, settings[0], scenario, pushed, halt)
                )
                try:
                    await _watch(api, replicas, worker, scenario, pushed, limit, out)
                finally:
                    halt.set()
                    await backend
            final = await _look(api, replicas, worker, scenario, pushed)
        reasons = await _dead_reasons(client, settings[0])
    check(final, scenario)
    write_summary(final, scenario, limits, reasons, time.monotonic() - started, out)
    return final


def _push(
    redis_url: str, settings: Settings, scenario: Scenario, pushed: list[int], halt: threading.Event
) -> None:
    """The backend: one ``add_event`` per notification, as one web request each would do."""
    pause = PUSH_SECONDS / max(scenario.events, 1)
    with redis.Redis.from_url(redis_url) as client:
        producer = SyncStreamProducer(client, settings.stream_name)
        for n, chat_id in enumerate(scenario.targets()):
            if halt.is_set():
                return
            text = f"Notification {n + 1} of {scenario.events}"
            url = f"https://example.com/notifications/{n + 1}"
            producer.add_event(*notification(chat_id, text, url=url))
            pushed[0] = n + 1
            halt.wait(pause)


async def _watch(
    api: TelegramBotAPIStandIn,
    replicas: list[Replica],
    worker: Any,
    scenario: Scenario,
    pushed: list[int],
    limit: float,
    out: TextIO,
) -> Progress:
    started = time.monotonic()
    live = out.isatty()
    last_line = 0.0
    while True:
        look = await _look(api, replicas, worker, scenario, pushed)
        elapsed = time.monotonic() - started
        if look.settled(scenario.events):
            progress_line(look, scenario.events, elapsed, out, live, final=True)
            return look
        if elapsed > limit:
            progress_line(look, scenario.events, elapsed, out, live, final=True)
            waiting = "?" if look.report.waiting is None else look.report.waiting
            msg = (
                f"after {limit:g}s, {look.outstanding(scenario.events)} of {scenario.events} "
                f"events are neither delivered nor dead-lettered (backend pushed {look.pushed}, "
                f"pending {look.report.pending}, unread {waiting}, arq queue {look.arq_queued})"
            )
            raise DemoFailedError(msg)
        if live or elapsed - last_line >= 1.0:
            progress_line(look, scenario.events, elapsed, out, live, final=False)
            last_line = elapsed
        await asyncio.sleep(0.1)


async def _look(
    api: TelegramBotAPIStandIn,
    replicas: list[Replica],
    worker: Any,
    scenario: Scenario,
    pushed: list[int],
) -> Progress:
    sent, rejected = api.sent, api.rejected
    arrivals = [m.at for m in sent] + [call.at for call in rejected]
    private = set(scenario.chat_ids)
    bulk = [m.at for m in sent if m.chat_id in private]
    bulk += [call.at for call in rejected if call.chat_id in private]
    delivered = len({(m.chat_id, m.text) for m in sent})
    container = replicas[0].container
    report = await container.events_monitor().report()
    processors = [replica.container.processor() for replica in replicas]
    return Progress(
        pushed=pushed[0],
        delivered=delivered,
        duplicates=len(sent) - delivered,
        retried=worker.jobs_complete,
        floods=api.flood_answers,
        dead=report.dead_letters,
        report=report,
        handled=tuple(processor.stats.handled for processor in processors),
        running=sum(processor.is_running for processor in processors),
        arq_queued=await container.redis().zcard(container.settings().arq_queue),
        rate=answer_rate(arrivals, until=max(bulk, default=0.0)),
    )


async def _dead_reasons(client: Redis, settings: Settings) -> Counter[str]:
    entries = await client.xrange(settings.stream_name + DEAD_LETTER_SUFFIX)
    field = DEAD_ERROR_FIELD.encode()
    return Counter(fields.get(field, b"?").decode() for _, fields in entries)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m example_bot.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=300, help="notifications to push")
    parser.add_argument(
        "--chats",
        type=int,
        help="private chats the rest goes to, round-robin (at least 10; default: one "
        "notification each)",
    )
    parser.add_argument("--groups", type=int, default=3, help="groups (negative chat ids)")
    parser.add_argument("--per-group", type=int, default=5, help="notifications per group")
    parser.add_argument("--busy", type=int, default=10, help="notifications to one busy chat")
    parser.add_argument("--timeout", type=float, default=45.0, help="seconds to wait for them")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the libraries' logs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        chats = args.chats or args.events - args.groups * args.per_group - args.busy
        scenario = Scenario(args.events, chats, args.groups, args.per_group, args.busy)
    except ScenarioError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    out = sys.stdout
    try:
        with RedisServer() as server:
            out.write(f"redis-server on {server.url}; Bot API stand-in on 127.0.0.1\n")
            asyncio.run(run_demo(server.url, scenario, args.timeout, out))
    except DemoFailedError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    out.write("OK: every event was delivered or dead-lettered; nothing is pending.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
