"""The bookings feature: two handlers for one event type, one of them behind a filter.

Both run for an urgent booking; if only one fails, only that one is retried.
"""

from codex_bot.redis import RedisRouter
from example_bot.features.bookings.handlers import alert_staff, confirm_booking, is_urgent

redis_router = RedisRouter()
redis_router.message("booking.confirmed")(confirm_booking)
redis_router.message("booking.confirmed", filter_func=is_urgent)(alert_staff)
