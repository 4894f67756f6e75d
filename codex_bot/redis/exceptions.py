"""Errors raised by codex_bot.redis.

The tree::

    CodexBotError
    ├── DispatcherNotReadyError   process_message() before setup()
    ├── MalformedEventError       an entry that cannot be decoded into an event
    ├── HandlerFailedError        handlers failed and nothing took over the retry
    ├── RetrySchedulingError      the retry scheduler refused or could not be reached
    ├── LeaseLostError            another replica holds a partition this one read
    ├── ReplicationError          fewer replicas confirmed a pushed event than asked for
    └── SlotMismatchError         keys one script touches are in different cluster slots
                                  (``codex_bot.redis.cluster``; also a ValueError)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class CodexBotError(Exception):
    """Base class of every error codex_bot raises on purpose."""


class DispatcherNotReadyError(CodexBotError):
    """``process_message`` was called before ``BotRedisDispatcher.setup(container)``.

    Call ``setup()`` (or bind the processor with ``codex_bot.lifecycle.setup_redis_events``)
    before the processor starts. The processor does not ACK the entry, so it is handled
    once the dispatcher is ready.
    """


class MalformedEventError(CodexBotError):
    """An entry has no ``type`` or a ``json:`` value that is not valid JSON.

    The processor moves such entries to the dead-letter stream with this message as the
    reason; a direct caller of ``process_message`` gets the error.
    """


@dataclass(frozen=True, slots=True)
class HandlerFailure:
    """One handler's failure while dispatching an event."""

    handler: str
    error: BaseException

    @property
    def description(self) -> str:
        """``ExceptionType: message`` — Telegram errors carry Telegram's own description."""
        return describe_error(self.error)


_ORIGINAL = "\nOriginal description: "
"""aiogram rewrites flood-control and migration messages and appends Telegram's after this."""
_MAX_DESCRIPTION = 2000
"""A dead-letter entry keeps this many characters of an error message."""


def describe_error(error: BaseException) -> str:
    """``ExceptionType: message``; for aiogram errors the message is Telegram's description.

    aiogram's ``str()`` adds a label ("Telegram server says - ") and a documentation link;
    its ``message`` attribute holds what Telegram answered, e.g.
    ``"Forbidden: bot was blocked by the user"``.

    Args:
        error: The exception a handler raised.

    Returns:
        The description, cut to 2000 characters.
    """
    message = getattr(error, "message", None)
    if not isinstance(message, str) or not type(error).__module__.startswith("aiogram"):
        message = str(error)
    message = message.rpartition(_ORIGINAL)[2]
    name = type(error).__name__
    description = f"{name}: {message}" if message else name
    return description[:_MAX_DESCRIPTION]


class HandlerFailedError(CodexBotError):
    """Handlers failed and no retry scheduler took the event over.

    The processor leaves the entry pending: it comes back through the claim sweep and is
    dead-lettered once it was delivered more than ``max_deliveries`` times.
    """

    def __init__(self, event_type: str, failures: Sequence[HandlerFailure]) -> None:
        self.event_type = event_type
        self.failures = tuple(failures)
        names = ", ".join(f"{f.handler} ({f.description})" for f in self.failures)
        super().__init__(f"handlers failed for {event_type!r}: {names}")


class RetrySchedulingError(CodexBotError):
    """The retry scheduler could not take a failed event (for instance ARQ's Redis is down).

    The entry is not ACKed: it stays pending and comes back through the claim sweep.
    """


class LeaseLostError(CodexBotError):
    """Another replica holds the lease of a partition now: this one stops reading it.

    Raised by a partition's storage when a read or an acknowledgement finds the lease gone
    (a long pause, a network split). Nothing is read or acknowledged then: the entries still
    in flight here stay pending, and the partition's new owner handles them again, in order.
    """


class ReplicationError(CodexBotError):
    """Fewer replicas confirmed a push than ``wait_replicas`` asked for before the WAIT timed out.

    Raised by ``StreamProducer`` and ``SyncStreamProducer`` after the events were written:
    every id in ``entry_ids`` exists on the primary, but those in ``unconfirmed_ids`` may or
    may not survive a failover (a replica promoted before it copied them never has them).
    Push them again to be sure (the bot then sees an event twice if the first copy survived,
    so handlers dedupe by an id the backend puts in the payload), or answer the request with
    an error and let its sender retry.

    Attributes:
        confirmed: The fewest replicas that confirmed a WAIT of this push.
        wanted: ``wait_replicas``.
        entry_ids: The ids of every event pushed, in the order they were given.
        unconfirmed_ids: The ids too few replicas confirmed (all of them unless the events
            went to several Redis Cluster shards and only some shards fell short).
    """

    def __init__(
        self,
        confirmed: int,
        wanted: int,
        entry_ids: Sequence[str],
        unconfirmed_ids: Sequence[str] | None = None,
    ) -> None:
        self.confirmed = confirmed
        self.wanted = wanted
        self.entry_ids = tuple(entry_ids)
        self.unconfirmed_ids = self.entry_ids if unconfirmed_ids is None else tuple(unconfirmed_ids)
        super().__init__(
            f"{confirmed} of {wanted} replica(s) confirmed {len(self.unconfirmed_ids)} of "
            f"{len(self.entry_ids)} event(s) before the WAIT timed out; they are on the "
            "primary but may not survive a failover"
        )
