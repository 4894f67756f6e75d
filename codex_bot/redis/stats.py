"""Counters a processor keeps, for health checks and metrics."""

from dataclasses import dataclass


@dataclass(slots=True)
class ProcessorStats:
    """What a ``RedisStreamProcessor`` did since it was created.

    Attributes:
        handled: Entries whose callback returned (dead-lettered handler failures included).
        failed: Entries whose callback raised; they stay pending and come back.
        dead_lettered: Entries moved to the dead-letter stream (the same step ACKs them).
        acked: Entries acknowledged after their callback returned; dead-lettered entries are
            counted in ``dead_lettered`` only.
        errors: Failed attempts of the read and ACK loops (every retry during an outage).
        groups_recreated: Times the consumer group was found missing and created again.
        parked: Entries whose dead letter could not be written after a few attempts; they
            stay pending, and ``is_healthy`` is false until ``release_parked()``.
    """

    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    acked: int = 0
    errors: int = 0
    groups_recreated: int = 0
    parked: int = 0
