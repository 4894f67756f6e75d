"""The notifications feature: which events it handles."""

from codex_bot.redis import RedisRouter
from example_bot.features.notifications.handlers import send_notification

redis_router = RedisRouter()
redis_router.message("notification.created")(send_notification)
