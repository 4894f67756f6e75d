"""``make demo``: the whole event path on one machine, with no token and no internet.

Starts a throwaway redis-server, a local stand-in for the Telegram Bot API (answering each
``sendMessage`` after 100 ms, as Telegram roughly does), the example bot (aiogram polling,
the processor bound to its hooks), an arq worker for retries, and a backend that pushes
notifications with ``SyncStreamProducer``. Some chats answer 429 (the events come back
through arq after ``retry_after``), some 403 or 400 (the events are dead-lettered with
Telegram's reason). Prints progress and a summary, shuts everything down, exits 0 — or 1
with the reason if something did not arrive in time.

    python -m example_bot.demo [--events 300] [--chats 60] [--timeout 45] [-v]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import redis
from aiogram import Bot
from redis.asyncio import Redis

from codex_bot.redis import SyncStreamProducer
from codex_bot.redis.constants import DEAD_ERROR_FIELD, DEAD_LETTER_SUFFIX
from codex_bot.testing.bot_api import TelegramBotAPIStandIn
from codex_bot.testing.redis_server import RedisServer
from example_bot.app import create_dispatcher
from example_bot.backend import notification
from example_bot.container import Container
from example_bot.services import EventsReport
from example_bot.settings import Settings
from example_bot.worker import retry_pool, running_worker

FIRST_CHAT = 1001
LATENCY = 0.1
RETRY_AFTER = 1
MIN_CHATS = 10
"""Room for two rate-limited, two blocked and one missing chat, each a different one."""
PUSH_SECONDS = 1.5
"""The backend spreads its events over this long, as requests to a web app would come."""


class DemoFailedError(Exception):
    """Something did not arrive in time; the message says what."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """Which chats misbehave, and how."""

    events: int
    chats: int

    @property
    def chat_ids(self) -> list[int]:
        return [FIRST_CHAT + i for i in range(self.chats)]

    @property
    def rate_limited(self) -> dict[int, int]:
        """Chat -> how many sends Telegram answers with 429 before it lets them through."""
        return {FIRST_CHAT + 3: 2, FIRST_CHAT + self.chats // 2 + 3: 1}

    @property
    def blocked(self) -> list[int]:
        return [FIRST_CHAT + 1, FIRST_CHAT + self.chats // 2 + 1]

    @property
    def missing(self) -> list[int]:
        return [FIRST_CHAT + self.chats - 1]

    def chat_of(self, n: int) -> int:
        return FIRST_CHAT + n % self.chats

    def expected_dead(self) -> int:
        unreachable = set(self.blocked) | set(self.missing)
        return sum(1 for n in range(self.events) if self.chat_of(n) in unreachable)


@dataclass(frozen=True, slots=True)
class Progress:
    """One look at where the events are."""

    pushed: int
    delivered: int
    duplicates: int
    retried: int
    rate_limited: int
    dead: int
    report: EventsReport
    arq_queued: int

    def outstanding(self, total: int) -> int:
        return total - self.delivered - self.dead

    def settled(self, total: int) -> bool:
        idle = self.report.pending == 0 and not self.report.waiting and self.arq_queued == 0
        return self.pushed == total and self.outstanding(total) == 0 and idle


def settings_for(redis_url: str) -> Settings:
    """The example bot's settings, tuned so retries come back within the demo."""
    return Settings(
        bot_token="42:DEMO-TOKEN",
        redis_url=redis_url,
        stream_name="demo_events",
        group="demo_bot",
        consumer_name="demo-bot-1",
        max_concurrency=100,
        poll_interval=0.5,
        claim_min_idle_ms=10_000,
        claim_interval=5.0,
        max_attempts=4,
        retry_delay=0.5,
        max_retry_delay=2.0,
    )


async def run_demo(redis_url: str, scenario: Scenario, limit: float, out: TextIO) -> Progress:
    """Run the bot, the worker and the backend until every event is settled; then stop.

    Returns:
        Where the events are after shutdown.

    Raises:
        DemoFailedError: events were not all delivered or dead-lettered within ``limit`` s.
    """
    started = time.monotonic()
    settings = settings_for(redis_url)
    async with TelegramBotAPIStandIn(latency=LATENCY) as api:
        for chat_id, times in scenario.rate_limited.items():
            api.fail_with_retry_after(chat_id, RETRY_AFTER, times=times)
        for chat_id in scenario.blocked:
            api.block_chat(chat_id)
        for chat_id in scenario.missing:
            api.missing_chat(chat_id)
        bot = Bot(settings.bot_token, session=api.session())
        client = Redis.from_url(redis_url, socket_connect_timeout=5)
        arq_pool = retry_pool(settings)
        try:
            dp = create_dispatcher(settings, bot=bot, redis=client, arq_pool=arq_pool)
            container: Container = dp["container"]
            async with running_worker(settings, poll_delay=0.05) as worker:
                polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
                try:
                    await _until(
                        lambda: container.processor().is_running or polling.done(),
                        10,
                        "the bot to start",
                    )
                    out.write(f"bot started; the backend pushes {scenario.events} notifications\n")
                    pushed = [0]
                    halt = threading.Event()
                    backend = asyncio.create_task(
                        asyncio.to_thread(_push, redis_url, settings, scenario, pushed, halt)
                    )
                    try:
                        await _watch(api, container, worker, scenario, pushed, limit, out)
                    finally:
                        halt.set()
                        await backend
                finally:
                    await _stop(dp, polling)
                final = await _look(api, container, worker, pushed)
            reasons = await _dead_reasons(client, settings)
        finally:
            await arq_pool.aclose()
            await client.aclose()
    _check(final, scenario)
    _summary(final, scenario, reasons, time.monotonic() - started, out)
    return final


def _push(
    redis_url: str, settings: Settings, scenario: Scenario, pushed: list[int], halt: threading.Event
) -> None:
    """The backend: one ``add_event`` per notification, as one web request each would do."""
    pause = PUSH_SECONDS / max(scenario.events, 1)
    with redis.Redis.from_url(redis_url) as client:
        producer = SyncStreamProducer(client, settings.stream_name)
        for n in range(scenario.events):
            if halt.is_set():
                return
            text = f"Notification {n + 1} of {scenario.events}"
            url = f"https://example.com/notifications/{n + 1}"
            producer.add_event(*notification(scenario.chat_of(n), text, url=url))
            pushed[0] = n + 1
            halt.wait(pause)


async def _watch(
    api: TelegramBotAPIStandIn,
    container: Container,
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
        look = await _look(api, container, worker, pushed)
        elapsed = time.monotonic() - started
        if look.settled(scenario.events):
            _progress_line(look, scenario, elapsed, out, live, final=True)
            return look
        if elapsed > limit:
            _progress_line(look, scenario, elapsed, out, live, final=True)
            waiting = "?" if look.report.waiting is None else look.report.waiting
            msg = (
                f"after {limit:g}s, {look.outstanding(scenario.events)} of {scenario.events} "
                f"events are neither delivered nor dead-lettered (backend pushed {look.pushed}, "
                f"pending {look.report.pending}, unread {waiting}, arq queue {look.arq_queued})"
            )
            raise DemoFailedError(msg)
        if live or elapsed - last_line >= 1.0:
            _progress_line(look, scenario, elapsed, out, live, final=False)
            last_line = elapsed
        await asyncio.sleep(0.1)


async def _look(
    api: TelegramBotAPIStandIn, container: Container, worker: Any, pushed: list[int]
) -> Progress:
    sent = api.sent
    delivered = len({(m.chat_id, m.text) for m in sent})
    report = await container.events_monitor().report()
    arq_queued = await container.redis().zcard(container.settings().arq_queue)
    return Progress(
        pushed=pushed[0],
        delivered=delivered,
        duplicates=len(sent) - delivered,
        retried=worker.jobs_complete,
        rate_limited=sum(1 for call in api.rejected if call.error_code == 429),
        dead=report.dead_letters,
        report=report,
        arq_queued=arq_queued,
    )


def _progress_line(
    look: Progress, scenario: Scenario, elapsed: float, out: TextIO, live: bool, *, final: bool
) -> None:
    line = (
        f"{elapsed:5.1f}s  pushed {look.pushed}/{scenario.events}  "
        f"delivered {look.delivered}  retried {look.retried}  dead-lettered {look.dead}  "
        f"pending {look.outstanding(scenario.events)}"
    )
    if live:
        out.write("\r" + line + "\x1b[K" + ("\n" if final else ""))  # K: clear the rest
    else:
        out.write(line + "\n")
    out.flush()


async def _stop(dp: Any, polling: asyncio.Task[None]) -> None:
    """Stop polling: aiogram runs the shutdown hooks (the processor drains), then closes."""
    if not polling.done():
        await dp.stop_polling()
    await polling


async def _until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            msg = f"timed out after {seconds:.0f}s waiting for {what}"
            raise DemoFailedError(msg)
        await asyncio.sleep(0.01)


async def _dead_reasons(client: Redis, settings: Settings) -> Counter[str]:
    entries = await client.xrange(settings.stream_name + DEAD_LETTER_SUFFIX)
    field = DEAD_ERROR_FIELD.encode()
    return Counter(fields.get(field, b"?").decode() for _, fields in entries)


def _check(final: Progress, scenario: Scenario) -> None:
    problems = []
    if final.report.running:
        problems.append("the processor is still running after shutdown")
    if final.outstanding(scenario.events) or final.report.pending or final.arq_queued:
        problems.append("events are left over after shutdown")
    if final.duplicates:
        problems.append(f"{final.duplicates} messages were sent twice")
    if final.dead != scenario.expected_dead():
        problems.append(f"expected {scenario.expected_dead()} dead letters, found {final.dead}")
    if problems:
        raise DemoFailedError("; ".join(problems))


def _summary(
    final: Progress, scenario: Scenario, reasons: Counter[str], seconds: float, out: TextIO
) -> None:
    left = final.outstanding(scenario.events)
    out.write(
        f"\nSummary: {scenario.events} notifications to {scenario.chats} chats\n"
        f"  delivered      {final.delivered:4d}\n"
        f"  retried        {final.retried:4d}  (Telegram answered 429 {final.rate_limited} times; "
        f"arq brought each event back after retry_after={RETRY_AFTER}s)\n"
        f"  dead-lettered  {final.dead:4d}  in demo_events{DEAD_LETTER_SUFFIX}, with Telegram's "
        "reason:\n"
    )
    for reason, count in reasons.most_common():
        out.write(f"                 {count:4d} x {reason}\n")
    out.write(
        f"  pending        {left:4d}  (XPENDING {final.report.pending}, arq queue "
        f"{final.arq_queued}, processor stopped)\n"
        f"demo: {scenario.events} events, delivered {final.delivered}, retried {final.retried}, "
        f"dead-lettered {final.dead}, pending {left}, in {seconds:.1f}s\n"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m example_bot.demo", description=__doc__)
    parser.add_argument("--events", type=int, default=300, help="notifications to push")
    parser.add_argument("--chats", type=int, default=60, help="chats they go to (at least 10)")
    parser.add_argument("--timeout", type=float, default=45.0, help="seconds to wait for them")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the libraries' logs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.chats < MIN_CHATS or args.events < 1:
        parser.error(f"--chats must be at least {MIN_CHATS} and --events at least 1")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    scenario = Scenario(args.events, args.chats)
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
