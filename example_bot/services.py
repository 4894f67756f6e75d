"""Services the handlers use, built by the container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from codex_bot.redis import RedisStreamProcessor


@dataclass(frozen=True, slots=True)
class EventsReport:
    """How event delivery is doing, for ``/status`` and the demo's progress line.

    Attributes:
        running: The processor is consuming.
        healthy: Running, and Redis answered its last call.
        handled: Events handled by this process since it started.
        in_flight: Events this process read and has not finished.
        pending: Entries the group read and has not acknowledged yet (XPENDING).
        waiting: Entries nobody read yet (XINFO GROUPS lag, Redis 7+; None when unknown).
        dead_letters: Entries in the dead-letter stream.
    """

    running: bool
    healthy: bool
    handled: int
    in_flight: int
    pending: int
    waiting: int | None
    dead_letters: int


class EventsMonitor:
    """Reports the processor's state and what Redis holds for its stream.

    Args:
        redis: A client of the Redis the processor consumes.
        processor: The bot's processor.
    """

    def __init__(self, redis: Redis, processor: RedisStreamProcessor) -> None:
        self.redis = redis
        self.processor = processor

    async def report(self) -> EventsReport:
        """Ask Redis for the group's pending and waiting entries and the dead-letter count."""
        processor = self.processor
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xinfo_groups(processor.stream_name)
            pipe.xlen(processor.dead_letter_stream)
            groups, dead = await pipe.execute(raise_on_error=False)
        group = _find_group(groups, processor.group_name)
        return EventsReport(
            running=processor.is_running,
            healthy=processor.is_healthy,
            handled=processor.stats.handled,
            in_flight=processor.in_flight,
            pending=int(group.get("pending", 0)),
            waiting=None if group.get("lag") is None else int(group["lag"]),
            dead_letters=dead if isinstance(dead, int) else 0,
        )


def _find_group(groups: Any, name: str) -> dict[str, Any]:
    if not isinstance(groups, list):  # no stream yet: XINFO GROUPS answers an error
        return {}
    for group in groups:
        group_name = group.get("name")
        if group_name in (name, name.encode()):
            return dict(group)
    return {}
