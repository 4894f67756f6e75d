"""The status feature: Telegram commands only, so an aiogram ``router`` and no ``redis_router``."""

from aiogram import Router
from aiogram.filters import Command, CommandStart

from example_bot.features.status.handlers import start, status

router = Router(name="status")
router.message(CommandStart())(start)
router.message(Command("status"))(status)
