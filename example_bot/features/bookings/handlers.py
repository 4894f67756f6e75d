"""Handlers of the bookings feature."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from example_bot.container import Container


def is_urgent(payload: dict[str, Any]) -> bool:
    """Filter: an urgent booking that names a staff chat to alert."""
    return payload.get("urgent") is True and bool(payload.get("staff_chat_id"))


async def confirm_booking(payload: dict[str, Any], container: Container) -> None:
    """Tell the client their booking is confirmed."""
    text = f"Booking {payload['booking_id']} is confirmed for {payload['slot']}."
    await container.bot().send_message(payload["chat_id"], text)


async def alert_staff(payload: dict[str, Any], container: Container) -> None:
    """Alert the staff chat to an urgent booking (runs only when ``is_urgent``)."""
    text = f"Urgent booking {payload['booking_id']} at {payload['slot']}: please prepare."
    await container.bot().send_message(payload["staff_chat_id"], text)
