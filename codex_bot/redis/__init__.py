"""Redis Stream events for aiogram bots: produce, consume, route, retry, dead-letter."""

from codex_bot.redis.adapter import BasicStorageAdapter, DeadLetterUnsupportedError
from codex_bot.redis.cluster import SlotMismatchError
from codex_bot.redis.codec import EntryLimits
from codex_bot.redis.context import EventContext, current_event
from codex_bot.redis.dispatcher import BotRedisDispatcher
from codex_bot.redis.exceptions import (
    CodexBotError,
    DispatcherNotReadyError,
    HandlerFailedError,
    HandlerFailure,
    MalformedEventError,
    ReplicationError,
    RetrySchedulingError,
)
from codex_bot.redis.partitioning import default_ordering_key, partition_of, partition_stream
from codex_bot.redis.policy import RetryDecision, RetryPolicy, classify_failure
from codex_bot.redis.processor import RedisStreamProcessor
from codex_bot.redis.producer import StreamProducer, SyncStreamProducer
from codex_bot.redis.reports import DeadLetter, DispatchReport
from codex_bot.redis.retry import (
    ArqRetryScheduler,
    PickleRefusedError,
    create_retry_pool,
    json_job_deserializer,
    json_job_serializer,
    redeliver_event,
)
from codex_bot.redis.router import RedisRouter
from codex_bot.redis.stats import ProcessorStats
from codex_bot.redis.storage import RedisStreamStorage
from codex_bot.redis.types import (
    ClaimPage,
    GroupConsumer,
    HandlingReport,
    ReliableStreamStorageProtocol,
    RetrySchedulerProtocol,
    StreamStorageProtocol,
)

__all__ = [
    "ArqRetryScheduler",
    "BasicStorageAdapter",
    "BotRedisDispatcher",
    "ClaimPage",
    "CodexBotError",
    "DeadLetter",
    "DeadLetterUnsupportedError",
    "DispatchReport",
    "DispatcherNotReadyError",
    "EntryLimits",
    "EventContext",
    "GroupConsumer",
    "HandlerFailedError",
    "HandlerFailure",
    "HandlingReport",
    "MalformedEventError",
    "PickleRefusedError",
    "ProcessorStats",
    "RedisRouter",
    "RedisStreamProcessor",
    "RedisStreamStorage",
    "ReliableStreamStorageProtocol",
    "ReplicationError",
    "RetryDecision",
    "RetryPolicy",
    "RetrySchedulerProtocol",
    "RetrySchedulingError",
    "SlotMismatchError",
    "StreamProducer",
    "StreamStorageProtocol",
    "SyncStreamProducer",
    "classify_failure",
    "create_retry_pool",
    "current_event",
    "default_ordering_key",
    "json_job_deserializer",
    "json_job_serializer",
    "partition_of",
    "partition_stream",
    "redeliver_event",
]
