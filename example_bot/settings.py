"""Settings from the environment: ``BOT_TOKEN`` and ``REDIS_URL`` are required."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from aiogram.utils.token import TokenValidationError, validate_token

from codex_bot.config import ConfigurationError, redis_url_from_env
from codex_bot.telegram import TelegramLimits

FEATURES = (
    "example_bot.features.notifications",
    "example_bot.features.bookings",
    "example_bot.features.status",
)
"""The features this bot is made of; each has a ``feature_setting.py``."""


class SettingsError(ConfigurationError, ValueError):
    """A required variable is missing or a value does not parse; the message is one line."""


def default_consumer_name() -> str:
    """``<hostname>-<pid>``: unique per bot process, as a consumer group needs."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the bot, the worker and the backend script need to know.

    Attributes:
        bot_token: ``BOT_TOKEN``, from @BotFather.
        redis_url: ``REDIS_URL``, e.g. ``redis://localhost:6379/0``; the stream and arq share it.
        stream_name: ``STREAM_NAME``: the stream backends push to.
        group: ``CONSUMER_GROUP``: shared by every instance of this bot.
        consumer_name: ``CONSUMER_NAME``: unique per process; default ``<hostname>-<pid>``.
        max_concurrency: ``MAX_CONCURRENCY``: handlers in flight at once.
        poll_interval: ``POLL_INTERVAL``: seconds a read waits on the server.
        claim_min_idle_ms: ``CLAIM_MIN_IDLE_MS``: when another consumer's entry counts as stale.
        claim_interval: ``CLAIM_INTERVAL``: seconds between sweeps for stale entries.
        max_attempts: ``MAX_ATTEMPTS``: attempts per event, the first delivery included.
        retry_delay: ``RETRY_DELAY``: seconds before the first retry (doubles each time).
        max_retry_delay: ``MAX_RETRY_DELAY``: cap of that backoff.
        arq_queue: ``ARQ_QUEUE``: the arq queue retries go through.
        max_flood_wait: ``MAX_FLOOD_WAIT``: the longest a send waits for its turn under
            Telegram's limits or for a 429's ``retry_after``; past it the send raises
            ``TelegramRetryAfter`` and the dispatcher retries the event.
        telegram_api_url: ``TELEGRAM_API_URL``: a self-hosted Bot API server (or the local
            stand-in); empty means Telegram's own.
        health_port: ``HEALTH_PORT``: serve ``/healthz`` and ``/metrics`` on this port;
            0 (the default) serves neither.
        health_host: ``HEALTH_HOST``: the address they listen on.
        features: The feature packages to load (code, not environment).
        telegram_limits: The flood limits sends are paced by (code, not environment;
            every replica of the bot must use the same).
    """

    bot_token: str = field(repr=False)  # never in a log line or a traceback
    redis_url: str = field(repr=False)  # may hold a password
    stream_name: str = "bot_events"
    group: str = "example_bot"
    consumer_name: str = field(default_factory=default_consumer_name)
    max_concurrency: int = 100
    poll_interval: float = 1.0
    claim_min_idle_ms: int = 60_000
    claim_interval: float = 30.0
    max_attempts: int = 5
    retry_delay: float = 60.0
    max_retry_delay: float = 3600.0
    arq_queue: str = "arq:queue"
    max_flood_wait: float = 60.0
    telegram_api_url: str = ""
    health_port: int = 0
    health_host: str = "0.0.0.0"  # a probe or a Prometheus server comes from outside
    features: tuple[str, ...] = FEATURES
    telegram_limits: TelegramLimits = field(default_factory=TelegramLimits)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``).

        Raises:
            SettingsError: ``BOT_TOKEN`` or ``REDIS_URL`` is missing (or empty), ``BOT_TOKEN``
                is not shaped like a token, ``REDIS_URL`` is not a Redis URL, or a number
                does not parse.
        """
        env = os.environ if environ is None else environ
        try:
            redis_url = redis_url_from_env("REDIS_URL", environ=env)
        except ConfigurationError as exc:
            raise SettingsError(str(exc)) from None
        missing = [] if env.get("BOT_TOKEN", "").strip() else ["BOT_TOKEN"]
        if redis_url is None:
            missing.append("REDIS_URL")
        if missing:
            msg = f"set {' and '.join(missing)} in the environment"
            raise SettingsError(msg)
        try:
            validate_token(env["BOT_TOKEN"])
        except TokenValidationError:
            # never the token itself: it is the bot's password
            msg = "BOT_TOKEN is not a bot token (expected <bot id>:<secret>, from @BotFather)"
            raise SettingsError(msg) from None
        values: dict[str, object] = {"redis_url": redis_url}
        for item in fields(cls):
            raw = env.get(_ENV_NAMES.get(item.name, item.name.upper()))
            if raw is None or item.name in ("features", "redis_url", "telegram_limits"):
                continue
            values[item.name] = _parse(item.name, raw, item.type)
        return cls(**values)  # type: ignore[arg-type]


_ENV_NAMES = {"group": "CONSUMER_GROUP"}


def _parse(name: str, raw: str, kind: object) -> object:
    converter = {"int": int, "float": float}.get(str(kind), str)
    try:
        return converter(raw)
    except ValueError:
        msg = f"{_ENV_NAMES.get(name, name.upper())}={raw!r} is not a valid {kind}"
        raise SettingsError(msg) from None
