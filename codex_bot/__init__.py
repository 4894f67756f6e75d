"""codex_bot: reliable Redis Stream events for aiogram 3 bots."""

__version__ = "0.1.0"

__all__ = ["__version__"]
