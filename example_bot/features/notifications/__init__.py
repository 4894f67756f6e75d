"""Notifications a backend pushes (``notification.created``), delivered as Telegram messages."""
