"""Telegram commands: ``/start`` and ``/status`` (how event delivery is doing)."""
