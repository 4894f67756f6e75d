"""The bot's features; each package has a ``feature_setting.py`` listed in ``settings.FEATURES``."""
