"""A consumer in the style of codex-bot 0.4.0, written from that package's description.

codex-bot 0.4.0 is the original package whose API codex_bot keeps; this is not its code.
What its ``RedisStreamProcessor`` does per cycle: an XAUTOCLAIM sweep when 60 s have
passed (so once at start), ``XREADGROUP COUNT 10`` without BLOCK, ``asyncio.sleep(1.0)``
when the read is empty, else for each entry one ``await callback(data)`` then one XACK, one
entry at a time. The callback is its dispatcher: container check, ``type`` lookup,
filter check, a debug log line, ``await handler(payload, container)``. The client decodes
responses (its handlers read ``str`` fields).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bench.common import (
    EVENT_TYPE,
    connect,
    drain_result,
    group_state,
    last_entry_id,
    run_child,
    wait_done,
)

logger = logging.getLogger(__name__)

BATCH_COUNT = 10
POLL_INTERVAL = 1.0
_RECOVERY_EVERY = 60.0

Handler = Callable[[dict[str, Any], Any], Awaitable[None]]


class V040Storage:
    """codex-bot 0.4.0's four storage calls over redis-py."""

    def __init__(self, redis: Redis, expected: int = 0) -> None:
        self.redis = redis
        self.acked = 0
        self.expected = expected
        self.all_acked = asyncio.Event()

    async def create_group(self, stream: str, group: str) -> None:
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_events(
        self, stream: str, group: str, consumer: str, count: int
    ) -> list[tuple[str, dict[str, Any]]]:
        reply = await self.redis.xreadgroup(group, consumer, {stream: ">"}, count=count)
        return [(entry_id, data) for _, entries in reply or () for entry_id, data in entries]

    async def ack_event(self, stream: str, group: str, entry_id: str) -> None:
        await self.redis.xack(stream, group, entry_id)
        self.acked += 1
        if self.acked == self.expected:
            self.all_acked.set()

    async def claim_stale_events(
        self, stream: str, group: str, consumer: str, min_idle_time: int, count: int
    ) -> list[tuple[str, dict[str, Any]]]:
        reply = await self.redis.xautoclaim(stream, group, consumer, min_idle_time, count=count)
        return list(reply[1])


class V040Dispatcher:
    """Routes by ``type``; handlers run one after another, as in codex-bot 0.4.0."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.handlers: dict[str, list[tuple[Handler, Any]]] = {}

    async def process_message(self, message: dict[str, Any]) -> None:
        if not self.container:
            logger.error("container not set")
            return
        message_type = message.get("type")
        if not message_type:
            logger.warning("message without type")
            return
        for handler, filter_func in self.handlers.get(message_type, []):
            if filter_func is None or filter_func(message):
                logger.debug("calling %s for type=%r", handler.__name__, message_type)
                await handler(message, self.container)


class V040Processor:
    """Sequential: read 10, handle and ACK each in turn, sleep-poll when nothing is new."""

    def __init__(
        self,
        storage: V040Storage,
        stream: str,
        group: str,
        consumer: str,
        callback: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.storage = storage
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.callback = callback
        self._last_recovery = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start_listening(self) -> None:
        await self.storage.create_group(self.stream, self.group)
        self._task = asyncio.create_task(self._loop())

    async def stop_listening(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() - self._last_recovery > _RECOVERY_EVERY:
                self._last_recovery = loop.time()
                stale = await self.storage.claim_stale_events(
                    self.stream, self.group, self.consumer, 60_000, BATCH_COUNT
                )
                for entry_id, data in stale:
                    await self._process_single(entry_id, data)
            entries = await self.storage.read_events(
                self.stream, self.group, self.consumer, BATCH_COUNT
            )
            if not entries:
                await asyncio.sleep(POLL_INTERVAL)
                continue
            for entry_id, data in entries:
                await self._process_single(entry_id, data)

    async def _process_single(self, entry_id: str, data: dict[str, Any]) -> None:
        try:
            await self.callback(data)
            await self.storage.ack_event(self.stream, self.group, entry_id)
        except Exception:
            logger.exception("failed to process %s", entry_id)


async def _drain_mode(args: argparse.Namespace) -> dict[str, Any]:
    redis = connect(args.url, decode=True)
    storage = V040Storage(redis, args.events)
    dispatcher = V040Dispatcher(SimpleNamespace(name="container"))
    handled = 0

    async def noop(payload: dict[str, Any], container: Any) -> None:
        nonlocal handled
        handled += 1

    dispatcher.handlers[EVENT_TYPE] = [(noop, None)]
    processor = V040Processor(storage, args.stream, args.group, "v040", dispatcher.process_message)
    try:
        cpu, started = time.process_time(), time.perf_counter()
        await processor.start_listening()
        await wait_done(storage.all_acked, lambda: storage.acked)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        await processor.stop_listening()
        state = await group_state(redis, args.stream, args.group)
        result = drain_result(handled, seconds, cpu, state, await last_entry_id(redis, args.stream))
    finally:
        await redis.aclose()
    result["read_count"] = BATCH_COUNT
    return result


if __name__ == "__main__":
    run_child(_drain_mode, __doc__ or "")
