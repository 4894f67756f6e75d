"""Operations on a bot's streams: what is stuck, dead letters, replays, idle consumers.

The ``codex-bot`` command is a thin layer over this package; use it directly for an admin
command of your own::

    from codex_bot.ops import DeadLetterFilter, StreamOps

    ops = StreamOps(redis, "bot_events")             # a Redis or a RedisCluster client
    stats = await ops.stats()
    result = await ops.replay(DeadLetterFilter(event_type="order.paid"))

    ops = PartitionedOps(redis, "bot_events", partitions=8)   # every partition at once
"""

from codex_bot.ops.admin import DEFAULT_ARQ_QUEUE, StreamOps
from codex_bot.ops.dead import DeadLetters, LetterSet, MergedDeadLetters
from codex_bot.ops.errors import (
    AmbiguousLetterError,
    GroupNotChosenError,
    GroupNotFoundError,
    OpsError,
    StreamNotFoundError,
)
from codex_bot.ops.letters import DeadLetterFilter, replayed_fields, text_fields
from codex_bot.ops.models import (
    ConsumerInfo,
    DeadLetterEntry,
    DeadLetterStats,
    GroupStats,
    PartitionedStats,
    PendingEntry,
    PruneResult,
    ReasonCount,
    ReplayedLetter,
    ReplayResult,
    RetryQueueStats,
    StreamInfo,
    StreamStats,
)
from codex_bot.ops.partitioned import PartitionedOps

__all__ = [
    "DEFAULT_ARQ_QUEUE",
    "AmbiguousLetterError",
    "ConsumerInfo",
    "DeadLetterEntry",
    "DeadLetterFilter",
    "DeadLetterStats",
    "DeadLetters",
    "GroupNotChosenError",
    "GroupNotFoundError",
    "GroupStats",
    "LetterSet",
    "MergedDeadLetters",
    "OpsError",
    "PartitionedOps",
    "PartitionedStats",
    "PendingEntry",
    "PruneResult",
    "ReasonCount",
    "ReplayResult",
    "ReplayedLetter",
    "RetryQueueStats",
    "StreamInfo",
    "StreamNotFoundError",
    "StreamOps",
    "StreamStats",
    "replayed_fields",
    "text_fields",
]
