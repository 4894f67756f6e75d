"""What ``make demo`` broadcasts: which chats get how many notifications, and which misbehave.

Most notifications go round-robin to private chats (one each by default, as a broadcast
does); a few go to groups (negative ids,
20 messages a minute each) and several to one busy chat (one message a second). Two private
chats blocked the bot (403) and one does not exist (400): their notifications are
dead-lettered with Telegram's reason. One chat answers 502 Bad Gateway twice: those events
come back through arq. No chat is set up to answer 429: the flood control paces every send
by Telegram's limits and absorbs a 429 itself, so a 429 here would mean the pacing failed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from codex_bot.testing import TelegramBotAPIStandIn

FIRST_CHAT = 1001
BUSY_CHAT = 777
FIRST_GROUP = -1001
SERVER_ERRORS = 2
"""How often the flaky chat answers 502 before it lets messages through."""
MIN_CHATS = 10
"""Room for two blocked chats, a missing one and a flaky one, each a different chat."""
MAX_PER_GROUP = 20
"""Telegram takes 20 messages a minute in a group; more would make the demo last minutes."""


class ScenarioError(ValueError):
    """The numbers do not make a scenario; the message says why."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """The broadcast: how many notifications, to which chats.

    Attributes:
        events: Notifications in all.
        chats: Private chats the bulk goes to, round-robin.
        groups: Groups that get ``per_group`` notifications each.
        per_group: Notifications per group.
        busy: Notifications to one private chat, which gets one a second at most.

    Raises:
        ScenarioError: Too few chats, too many notifications per group, or not enough
            events for the groups and the busy chat.
    """

    events: int
    chats: int
    groups: int = 3
    per_group: int = 5
    busy: int = 10

    def __post_init__(self) -> None:
        if self.chats < MIN_CHATS:
            msg = f"--chats must be at least {MIN_CHATS}"
            raise ScenarioError(msg)
        if not 0 <= self.per_group <= MAX_PER_GROUP or self.groups < 0 or self.busy < 0:
            msg = f"--per-group must be 0 to {MAX_PER_GROUP}; --groups and --busy at least 0"
            raise ScenarioError(msg)
        if self.events <= self.groups * self.per_group + self.busy:
            msg = "--events must exceed the group and busy-chat notifications together"
            raise ScenarioError(msg)

    @property
    def chat_ids(self) -> list[int]:
        return [FIRST_CHAT + i for i in range(self.chats)]

    @property
    def group_ids(self) -> list[int]:
        return [FIRST_GROUP - i for i in range(self.groups)]

    @property
    def blocked(self) -> list[int]:
        return [FIRST_CHAT + 1, FIRST_CHAT + self.chats // 2 + 1]

    @property
    def missing(self) -> list[int]:
        return [FIRST_CHAT + self.chats - 1]

    @property
    def flaky(self) -> int:
        return FIRST_CHAT + 3

    def targets(self) -> list[int]:
        """The chat of each notification, in the order the backend pushes them.

        Group and busy-chat notifications are spread evenly among the bulk.
        """
        special = [((i + 0.5) / self.busy, BUSY_CHAT) for i in range(self.busy)]
        in_groups = self.groups * self.per_group
        groups = itertools.cycle(self.group_ids)
        special += [((j + 0.5) / in_groups, next(groups)) for j in range(in_groups)]
        step = self.events / max(len(special), 1)
        spread = {int((k + 0.5) * step): chat for k, (_, chat) in enumerate(sorted(special))}
        bulk = itertools.cycle(self.chat_ids)
        return [spread[n] if n in spread else next(bulk) for n in range(self.events)]

    def expected_dead(self) -> int:
        """Notifications to chats that blocked the bot or do not exist."""
        unreachable = set(self.blocked) | set(self.missing)
        return sum(1 for chat in self.targets() if chat in unreachable)

    def expected_retried(self) -> int:
        """Events arq brings back: one per 502, if the flaky chat gets a notification."""
        return SERVER_ERRORS if self.flaky in self.targets() else 0

    def set_up(self, api: TelegramBotAPIStandIn) -> None:
        """Make the stand-in answer 403, 400 and 502 for the chats chosen for it."""
        for chat_id in self.blocked:
            api.block_chat(chat_id)
        for chat_id in self.missing:
            api.missing_chat(chat_id)
        api.fail_with_server_error(self.flaky, times=SERVER_ERRORS)
