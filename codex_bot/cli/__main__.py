"""``python -m codex_bot.cli``: the same as the ``codex-bot`` command."""

from codex_bot.cli.main import main

main()
