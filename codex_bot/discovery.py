"""Feature discovery: collect the routers that each feature's ``feature_setting.py`` declares.

A feature is a package (``example_bot.features.bookings``) whose ``feature_setting`` module
declares ``redis_router`` (a ``RedisRouter`` for stream events), ``router`` (an aiogram
``Router`` for commands and callbacks), or both. A project lists its features once and
includes them at start-up; a mistake in the list fails the start-up, naming the feature.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

from aiogram import Dispatcher, Router

from codex_bot.redis.dispatcher import BotRedisDispatcher
from codex_bot.redis.exceptions import CodexBotError
from codex_bot.redis.router import RedisRouter

SETTING_MODULE = "feature_setting"
REDIS_ROUTER_NAME = "redis_router"
ROUTER_NAME = "router"


class FeatureDiscoveryError(CodexBotError):
    """A listed feature cannot be loaded: fix the feature list or the feature.

    Raised at start-up when a feature's package or its ``feature_setting.py`` does not
    exist, when ``feature_setting.py`` fails to import (the cause is chained), declares
    neither ``redis_router`` nor ``router``, declares one of the wrong type, or when a
    feature is listed twice (its handlers would run twice).
    """


@dataclass(frozen=True, slots=True)
class Feature:
    """One loaded feature: its package name and the routers its ``feature_setting`` declares."""

    name: str
    redis_router: RedisRouter | None
    router: Router | None


def load_features(features: Iterable[str]) -> list[Feature]:
    """Import each feature's ``feature_setting`` module and take its routers.

    Args:
        features: Feature package names, e.g. ``["example_bot.features.bookings"]``.

    Returns:
        The features in the order given.

    Raises:
        FeatureDiscoveryError: a feature is missing, broken, declares no router, or is
            listed twice.
    """
    loaded: list[Feature] = []
    seen: set[str] = set()
    for name in features:
        if name in seen:
            msg = f"feature {name!r} is listed twice; its handlers would run twice"
            raise FeatureDiscoveryError(msg)
        seen.add(name)
        loaded.append(_load(name))
    return loaded


def collect_redis_routers(features: Iterable[str]) -> list[RedisRouter]:
    """The ``redis_router`` of every feature that declares one, in the order given.

    Raises:
        FeatureDiscoveryError: as :func:`load_features`.
    """
    return [f.redis_router for f in load_features(features) if f.redis_router is not None]


def collect_routers(features: Iterable[str]) -> list[Router]:
    """The aiogram ``router`` of every feature that declares one, in the order given.

    Raises:
        FeatureDiscoveryError: as :func:`load_features`.
    """
    return [f.router for f in load_features(features) if f.router is not None]


def include_features(
    redis_dispatcher: BotRedisDispatcher, features: Iterable[str], *, dp: Dispatcher | None = None
) -> list[Feature]:
    """Include every feature's ``redis_router`` (and, given ``dp``, its aiogram ``router``).

    Args:
        redis_dispatcher: Gets each ``redis_router``.
        features: Feature package names.
        dp: When given, gets each aiogram ``router``.

    Returns:
        The loaded features.

    Raises:
        FeatureDiscoveryError: as :func:`load_features`.
    """
    loaded = load_features(features)
    for feature in loaded:
        if feature.redis_router is not None:
            redis_dispatcher.include_router(feature.redis_router)
        if dp is not None and feature.router is not None:
            dp.include_router(feature.router)
    return loaded


def _load(name: str) -> Feature:
    module = _import_setting(name)
    redis_router = getattr(module, REDIS_ROUTER_NAME, None)
    router = getattr(module, ROUTER_NAME, None)
    if redis_router is None and router is None:
        msg = (
            f"feature {name!r}: {module.__name__} declares neither "
            f"{REDIS_ROUTER_NAME!r} (a RedisRouter) nor {ROUTER_NAME!r} (an aiogram Router)"
        )
        raise FeatureDiscoveryError(msg)
    if redis_router is not None and not isinstance(redis_router, RedisRouter):
        kind = type(redis_router).__name__
        msg = f"feature {name!r}: {REDIS_ROUTER_NAME} has type {kind}, expected a RedisRouter"
        raise FeatureDiscoveryError(msg)
    if router is not None and not isinstance(router, Router):
        kind = type(router).__name__
        msg = f"feature {name!r}: {ROUTER_NAME} has type {kind}, expected an aiogram Router"
        raise FeatureDiscoveryError(msg)
    return Feature(name, redis_router, router)


def _import_setting(name: str) -> ModuleType:
    setting = f"{name}.{SETTING_MODULE}"
    try:
        return importlib.import_module(setting)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        # Only a missing feature package (or a parent of it) or a missing feature_setting
        # means "not found"; any other missing module is the feature's own broken import.
        if missing == setting:
            msg = f"feature {name!r} has no {SETTING_MODULE}.py"
            raise FeatureDiscoveryError(msg) from exc
        if missing and (name == missing or name.startswith(missing + ".")):
            msg = f"feature {name!r} not found: there is no module named {missing!r}"
            raise FeatureDiscoveryError(msg) from exc
        msg = f"feature {name!r}: {setting} failed to import: {exc}"
        raise FeatureDiscoveryError(msg) from exc
    except Exception as exc:
        msg = f"feature {name!r}: {setting} failed to import: {type(exc).__name__}: {exc}"
        raise FeatureDiscoveryError(msg) from exc
