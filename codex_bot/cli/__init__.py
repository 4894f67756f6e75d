"""The ``codex-bot`` command line; ``codex_bot.ops`` is the Python API underneath."""
