"""Telegram flood control shared by every process of a bot."""

from codex_bot.telegram.limiter import FloodLimiter, Turn
from codex_bot.telegram.limits import TelegramLimits

__all__ = ["FloodLimiter", "TelegramLimits", "Turn"]
