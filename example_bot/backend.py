r"""What a backend service does to reach the bot: push events with ``SyncStreamProducer``.

A Django view or a Celery task would hold one producer and call ``add_event``::

    producer = SyncStreamProducer(redis.Redis.from_url(settings.REDIS_URL), "bot_events")
    producer.add_event(*notification(order.chat_id, "Your order has shipped"))

From the shell::

    export REDIS_URL=redis://localhost:6379/0
    python -m example_bot.backend notification --chat-id 1 --text hi --url https://example.com
    python -m example_bot.backend booking --chat-id 1 --booking-id B-7 --slot 10:00 --urgent \
        --staff-chat-id 2
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import redis

from codex_bot.redis import SyncStreamProducer

Event = tuple[str, dict[str, Any]]


def notification(
    chat_id: int, text: str, *, url: str | None = None, button: str | None = None
) -> Event:
    """A ``notification.created`` event: ``text`` to ``chat_id``, a button if ``url`` is set."""
    data: dict[str, Any] = {"chat_id": chat_id, "text": text}
    if url:
        data["url"] = url
    if button:
        data["button"] = button
    return "notification.created", data


def booking(
    chat_id: int,
    booking_id: str,
    slot: str,
    *,
    urgent: bool = False,
    staff_chat_id: int | None = None,
) -> Event:
    """A ``booking.confirmed`` event; an urgent one with ``staff_chat_id`` alerts the staff."""
    data: dict[str, Any] = {"chat_id": chat_id, "booking_id": booking_id, "slot": slot}
    data["urgent"] = urgent
    if staff_chat_id is not None:
        data["staff_chat_id"] = staff_chat_id
    return "booking.confirmed", data


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m example_bot.backend",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--stream", default=os.environ.get("STREAM_NAME", "bot_events"))
    events = parser.add_subparsers(dest="event", required=True)
    note = events.add_parser("notification", help="push notification.created")
    note.add_argument("--chat-id", type=int, required=True)
    note.add_argument("--text", required=True)
    note.add_argument("--url")
    note.add_argument("--button")
    book = events.add_parser("booking", help="push booking.confirmed")
    book.add_argument("--chat-id", type=int, required=True)
    book.add_argument("--booking-id", required=True)
    book.add_argument("--slot", required=True)
    book.add_argument("--urgent", action="store_true")
    book.add_argument("--staff-chat-id", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Push one event and print its entry id; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error("set REDIS_URL or pass --redis-url")
    if args.event == "notification":
        event = notification(args.chat_id, args.text, url=args.url, button=args.button)
    else:
        event = booking(
            args.chat_id,
            args.booking_id,
            args.slot,
            urgent=args.urgent,
            staff_chat_id=args.staff_chat_id,
        )
    with redis.Redis.from_url(args.redis_url) as client:
        entry_id = SyncStreamProducer(client, args.stream).add_event(*event)
    print(entry_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
