"""Telegram flood control shared by every process of a bot: pacing, 429s as back-pressure.

Importing this package loads aiogram; ``codex_bot.redis.producer`` does not import it.
"""

from codex_bot.telegram.limiter import FloodLimiter, Turn
from codex_bot.telegram.limits import TelegramLimits
from codex_bot.telegram.methods import PacedRequest, paced_request
from codex_bot.telegram.middleware import RateLimitMiddleware
from codex_bot.telegram.stats import RateLimitStats

__all__ = [
    "FloodLimiter",
    "PacedRequest",
    "RateLimitMiddleware",
    "RateLimitStats",
    "TelegramLimits",
    "Turn",
    "paced_request",
]
