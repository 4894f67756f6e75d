"""Counters a processor keeps, for health checks and metrics."""

from dataclasses import dataclass


@dataclass(slots=True)
class ProcessorStats:
    """What a ``RedisStreamProcessor`` did since it was created."""

    handled: int = 0
    """Entries whose callback returned (dead-lettered handler failures included)."""
    failed: int = 0
    """Entries whose callback raised; they stay pending and come back."""
    dead_lettered: int = 0
    """Entries moved to the dead-letter stream (the same step ACKs them)."""
    acked: int = 0
    """Entries acknowledged after their callback returned; dead-lettered entries are counted
    in ``dead_lettered`` only."""
    errors: int = 0
    """Failed attempts of the read and ACK loops (every retry during an outage)."""
    groups_recreated: int = 0
    """Times the consumer group was found missing and created again."""
    parked: int = 0
    """Entries whose dead letter could not be written after a few attempts; they stay
    pending, and ``is_healthy`` is false until ``release_parked()``."""
