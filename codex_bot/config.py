"""Configuration from the environment: a wrong value fails at once, with one clear line.

``redis_url_from_env`` reads a Redis URL the way a bot, a worker and a backend script all
need it: unset or empty means "not given", anything else must be a URL that both redis-py
(``Redis.from_url``) and arq (``RedisSettings.from_dsn``) accept. The error names the
variable and the expected form and never repeats a password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import overload
from urllib.parse import SplitResult, parse_qs, urlsplit

from codex_bot.redis.exceptions import CodexBotError

REDIS_URL_FORMS = (
    "redis://[[user]:password@]host[:port][/db], "
    "rediss://... (TLS) or unix://[[user]:password@]/path/to/socket[?db=N]"
)
"""The forms a Redis URL may take, as error messages spell them out."""

_SCHEMES = frozenset({"redis", "rediss", "unix"})
_SCHEME_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PASSWORD_ARGUMENT = re.compile(r"(?i)(password=)[^&#]*")
_NUMBER = re.compile(r"[0-9]+")


class ConfigurationError(CodexBotError):
    """A setting is malformed. The message names the setting and what it should look like,
    and never contains a password."""


def mask_password(url: str) -> str:
    """``url`` with its credentials replaced by ``***``, safe to log or show.

    Everything between the scheme and the last ``@`` goes (a password may itself hold
    ``@``, ``/`` or ``#``), and so does the value of a ``password=`` query argument.

    Args:
        url: A URL that may carry ``user:password@``; it need not be valid.

    Returns:
        For example ``redis://***@db:6379/0`` for ``redis://bot:s3cret@db:6379/0``.
    """
    masked = _PASSWORD_ARGUMENT.sub(r"\1***", url)
    userinfo_end = masked.rfind("@")
    if userinfo_end < 0:
        return masked
    prefix = _SCHEME_PREFIX.match(masked)
    start = prefix.end() if prefix else 0
    return masked[:start] + "***" + masked[userinfo_end:]


def check_redis_url(url: str, name: str = "REDIS_URL") -> str:
    """Check that ``url`` is a Redis URL redis-py and arq both accept.

    Args:
        url: The value to check.
        name: The setting it came from, for the error message.

    Returns:
        ``url``, without a path that names no database (``redis://host:6379/``): arq
        reads an empty database number as an error.

    Raises:
        ConfigurationError: the scheme is not ``redis``, ``rediss`` or ``unix``, the port
            or the database number is not a number, or a ``unix://`` URL has no path.
    """
    problem = redis_url_problem(url)
    if problem:
        msg = f"{name}={mask_password(url)!r} {problem}; expected {REDIS_URL_FORMS}"
        raise ConfigurationError(msg)
    parts = urlsplit(url)
    if parts.scheme != "unix" and parts.path and not parts.path.strip("/"):
        return parts._replace(path="").geturl()
    return url


@overload
def redis_url_from_env(
    name: str = ..., default: None = None, *, environ: Mapping[str, str] | None = ...
) -> str | None: ...
@overload
def redis_url_from_env(
    name: str, default: str, *, environ: Mapping[str, str] | None = ...
) -> str: ...
@overload
def redis_url_from_env(
    name: str = ..., *, default: str, environ: Mapping[str, str] | None = ...
) -> str: ...
def redis_url_from_env(
    name: str = "REDIS_URL",
    default: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The Redis URL in the environment variable ``name``, checked.

    Args:
        name: The variable to read.
        default: What an unset or empty (or blank) variable gives; not checked.
        environ: Where to read it; ``os.environ`` when None.

    Returns:
        The URL (see :func:`check_redis_url`), or ``default``.

    Raises:
        ConfigurationError: the variable is set to something that is not a Redis URL,
            e.g. ``localhost:6379`` (no scheme).
    """
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    if not value:
        return default
    return check_redis_url(value, name)


def redis_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a Redis URL (``"has no scheme"``, ...), or None.

    The message never holds the URL's password.
    """
    if not _SCHEME_PREFIX.match(url):
        return "has no scheme"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL": an unclosed "[" (no password in it)
        return f"is not a valid URL ({exc})"
    if parts.scheme not in _SCHEMES:  # urlsplit lower-cases it, as redis-py and arq do
        return f"has the scheme {parts.scheme!r}"
    return _address_problem(parts)


def _address_problem(parts: SplitResult) -> str | None:
    """What is wrong with the port, socket path or database number of a Redis URL."""
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked for it
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    databases = parse_qs(parts.query).get("db", [])
    if parts.scheme == "unix":
        if not parts.path:
            return "names no socket path"
    elif parts.path.strip("/"):
        databases.append(parts.path.lstrip("/"))  # as arq reads it: "/2/" is no number
    if not all(_NUMBER.fullmatch(db) for db in databases):
        return "has a database number that is not a number"
    return None
