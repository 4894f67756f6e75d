"""Counters a ``RateLimitMiddleware`` keeps, for metrics."""

from dataclasses import dataclass


@dataclass(slots=True)
class RateLimitStats:
    """What a ``RateLimitMiddleware`` did since it was created.

    Attributes:
        paced: Requests that went through the flood budgets (each counted once, however
            often it was sent).
        waited: Times a request slept for its turn (a request held by a 429 counts again).
        wait_seconds: Seconds slept in total, for turns and for 429s.
        flood_absorbed: 429 answers absorbed: the request was held and sent again.
        flood_raised: 429 answers passed on to the caller as ``TelegramRetryAfter``
            (``retry_after`` above ``max_flood_wait``).
        refused: Requests whose turn was further away than ``max_flood_wait``; the caller
            got ``TelegramRetryAfter`` without Telegram being asked.
        migrations: Requests sent again to the supergroup a group was migrated to.
        unpaced: Requests sent without pacing because Redis was unreachable.
    """

    paced: int = 0
    waited: int = 0
    wait_seconds: float = 0.0
    flood_absorbed: int = 0
    flood_raised: int = 0
    refused: int = 0
    migrations: int = 0
    unpaced: int = 0
