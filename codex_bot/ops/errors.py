"""Errors of the operations API: what an operator asked for does not exist or is ambiguous."""

from __future__ import annotations

from collections.abc import Sequence

from codex_bot.redis.exceptions import CodexBotError


class OpsError(CodexBotError):
    """An operation on a stream could not be done as asked; the message says why."""


class StreamNotFoundError(OpsError):
    """The stream does not exist (nothing was ever added to it, or it was deleted).

    For a partitioned stream: none of its partitions exists.
    """

    def __init__(self, stream: str, partitions: Sequence[str] = ()) -> None:
        self.stream = stream
        self.partitions = tuple(partitions)
        if len(partitions) == 1:
            super().__init__(f"stream {stream!r} has no partition: {partitions[0]} does not exist")
        elif partitions:
            names = f"{partitions[0]} to {partitions[-1]}"
            super().__init__(f"stream {stream!r} has no partition: {names} do not exist")
        else:
            super().__init__(f"stream {stream!r} does not exist")


class GroupNotFoundError(OpsError):
    """The stream has no consumer group of that name."""

    def __init__(self, stream: str, group: str, known: Sequence[str]) -> None:
        self.stream = stream
        self.group = group
        self.known = tuple(known)
        names = ", ".join(known) if known else "none"
        super().__init__(f"stream {stream!r} has no consumer group {group!r} (groups: {names})")


class GroupNotChosenError(OpsError):
    """The stream has no consumer group, or several, and none was named."""

    def __init__(self, stream: str, known: Sequence[str]) -> None:
        self.stream = stream
        self.known = tuple(known)
        if known:
            names = ", ".join(known)
            msg = f"stream {stream!r} has several consumer groups ({names}): name one with group"
        else:
            msg = f"stream {stream!r} has no consumer group"
        super().__init__(msg)


class AmbiguousLetterError(OpsError):
    """Letters with the same id are in several dead-letter streams (two partitions')."""

    def __init__(self, letter_id: str, dead_streams: Sequence[str]) -> None:
        self.letter_id = letter_id
        self.dead_streams = tuple(dead_streams)
        where = ", ".join(dead_streams)
        super().__init__(f"dead letter {letter_id} is in several dead-letter streams ({where})")
