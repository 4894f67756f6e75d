"""An example codex_bot project (filled in by the example-bot work)."""
