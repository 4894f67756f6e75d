"""Services the handlers use, built by the container."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from codex_bot.ops import GroupNotFoundError, StreamNotFoundError, StreamOps
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
        waiting: Entries nobody read yet (the group's lag; None when unknown).
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
    """Reports the processor's state and what Redis holds for its stream (via ``StreamOps``).

    Args:
        redis: A client of the Redis the processor consumes.
        processor: The bot's processor.
    """

    def __init__(self, redis: Redis, processor: RedisStreamProcessor) -> None:
        self.redis = redis
        self.processor = processor
        self.ops = StreamOps(
            redis,
            processor.stream_name,
            group=processor.group_name,
            dead_letter_stream=processor.dead_letter_stream,
        )

    async def report(self) -> EventsReport:
        """Ask Redis for the group's pending and waiting entries and the dead-letter count."""
        processor = self.processor
        try:
            [group] = await self.ops.groups()
        except (StreamNotFoundError, GroupNotFoundError):  # nothing consumed yet
            pending, waiting = 0, None
        else:
            pending, waiting = group.pending, group.lag
        return EventsReport(
            running=processor.is_running,
            healthy=processor.is_healthy,
            handled=processor.stats.handled,
            in_flight=processor.in_flight,
            pending=pending,
            waiting=waiting,
            dead_letters=await self.ops.dead.count(),
        )
