"""An example codex_bot project, laid out as a real bot project should be.

- ``settings.py``: configuration from the environment.
- ``container.py``: the dependency-injector container handlers receive.
- ``features/<name>/feature_setting.py``: each feature's ``redis_router`` and/or aiogram ``router``.
- ``app.py``: builds the aiogram ``Dispatcher`` with the processor bound to its hooks.
- ``main.py``: runs the bot (``python -m example_bot.main``).
- ``worker.py``: the arq worker that brings failed events back (``arq ...WorkerSettings``).
- ``backend.py``: what a backend service does to push events (``python -m example_bot.backend``).
- ``demo.py``: everything above on one machine, no token, no internet (``make demo``).
- ``minimal.py``: the README's one-file wiring example.
"""
