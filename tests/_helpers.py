"""Helpers several test modules share (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from dependency_injector import containers, providers
from redis.asyncio.sentinel import Sentinel

from codex_bot.redis import RedisStreamProcessor, RedisStreamStorage, current_event
from codex_bot.redis.types import MessageCallback
from codex_bot.testing import RedisClusterServer, ServerProcess

OWN_SERVERS_ONLY = pytest.mark.skipif(
    bool(os.environ.get("REDIS_URL")), reason="REDIS_URL: no redis-servers of our own"
)
"""For tests that start redis-servers of their own (clusters, Sentinels) and cannot use another."""


class BotContainer(containers.DeclarativeContainer):
    """A container holding only the bot."""

    bot = providers.Dependency(instance_of=Bot)


def command_update(chat_id: int, text: str) -> dict[str, Any]:
    """An update (without ``update_id``) carrying a private chat's ``text`` command."""
    user = {"id": chat_id, "is_bot": False, "first_name": "Ann"}
    message = {
        "message_id": 1,
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": "private", "first_name": "Ann"},
        "from": user,
        "text": text,
        "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}],
    }
    return {"message": message}


ROOT = Path(__file__).resolve().parent.parent
"""The project's directory."""


def run_python(
    *args: str, cwd: Path | None = None, timeout: float = 30.0, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in a fresh interpreter with ``env`` added to this one's environment:
    its exit status and its output as text, whatever the status."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def without_package(tmp_path: Path, package: str) -> str:
    """A ``PYTHONPATH`` on which ``package`` fails to import, as if it were not installed
    (the project itself still imports)."""
    shadow = tmp_path / package
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('not installed here')\n")
    return os.pathsep.join([str(tmp_path), str(ROOT)])


def import_with_redis_url(module: str, url: str) -> subprocess.CompletedProcess[str]:
    """Import ``module`` in a fresh Python with ``REDIS_URL`` set to ``url``."""
    return run_python("-c", f"import {module}", REDIS_URL=url)


def max_in_window(times: list[float], span: float) -> int:
    """The most arrivals in any window ``(t - span, t]``."""
    times = sorted(times)
    return max(sum(1 for s in times[: i + 1] if s > t - span) for i, t in enumerate(times))


class Seen:
    """A message callback recording (stream, chat_id, seq) of each handled event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, Any]] = []

    async def __call__(self, payload: dict[str, Any]) -> None:
        event = current_event()
        assert event is not None
        self.events.append((event.stream_name, payload.get("chat_id"), payload.get("seq")))


@contextlib.asynccontextmanager
async def running_processor(
    redis: Any, stream: str, callback: MessageCallback, consumer: str = "c1", **options: Any
) -> AsyncIterator[RedisStreamProcessor]:
    """A started processor (group ``bot``) feeding ``callback``; stopped on the way out."""
    processor = RedisStreamProcessor(
        RedisStreamStorage(redis), stream, "bot", consumer, poll_interval=0.05, **options
    )
    processor.set_message_callback(callback)
    await processor.start_listening()
    try:
        yield processor
    finally:
        await processor.stop_listening()


@contextlib.asynccontextmanager
async def arq_pool(url: str) -> AsyncIterator[ArqRedis]:
    """The bot's arq pool on ``url`` (JSON jobs, arq's default queue); no worker runs."""
    pool = await create_pool(
        RedisSettings.from_dsn(url),
        job_serializer=lambda job: json.dumps(job).encode(),
        job_deserializer=json.loads,
    )
    try:
        yield pool
    finally:
        await pool.aclose()


# -- servers started by codex_bot.testing -----------------------------------------------------


def ids_on(node: ServerProcess, stream: str) -> list[str]:
    """Entry ids of ``stream`` as ``node`` itself holds them."""
    with node.client() as client:
        return [entry_id for entry_id, _ in client.xrange(stream)]


@contextlib.asynccontextmanager
async def sentinels(addresses: list[tuple[str, int]]) -> AsyncIterator[Sentinel]:
    """redis-py's Sentinel client; its connections to the Sentinels closed afterwards."""
    client = Sentinel(addresses, socket_timeout=2)
    try:
        yield client
    finally:
        for connection in client.sentinels:
            await connection.aclose()


def getkeys_calls(cluster: RedisClusterServer) -> int:
    """COMMAND calls over all nodes (7.0 counts COMMAND GETKEYS apart, 6.2 with COMMAND)."""
    total = 0
    for node in cluster.nodes:
        with node.client() as redis:
            stats = redis.info("commandstats")
        total += sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_command"))
    return total
