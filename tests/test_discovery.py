"""Feature discovery: routers come from each feature_setting.py; mistakes name the feature."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiogram import Dispatcher, Router

from codex_bot.discovery import (
    FeatureDiscoveryError,
    collect_redis_routers,
    collect_routers,
    include_features,
    load_features,
)
from codex_bot.redis import BotRedisDispatcher, CodexBotError, RedisRouter

REDIS_FEATURE = """
from codex_bot.redis import RedisRouter

redis_router = RedisRouter()

@redis_router.message("{event}")
async def handle(payload, container):
    container.append(("{event}", payload))
"""

COMMANDS_FEATURE = """
from aiogram import Router

router = Router(name="{name}")
"""


class Project:
    """A throwaway package of features on sys.path, named uniquely per test."""

    def __init__(self, root: Path) -> None:
        self.package = f"proj_{uuid.uuid4().hex[:10]}"
        self.root = root / self.package / "features"
        self.root.mkdir(parents=True)
        (self.root.parent / "__init__.py").write_text("")
        (self.root / "__init__.py").write_text("")

    def feature(self, name: str, setting: str | None) -> str:
        folder = self.root / name
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        if setting is not None:
            (folder / "feature_setting.py").write_text(textwrap.dedent(setting))
        return f"{self.package}.features.{name}"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.syspath_prepend(str(tmp_path))
    made = Project(tmp_path)
    yield made
    for name in [m for m in sys.modules if m.startswith(made.package)]:
        del sys.modules[name]


async def test_included_features_route_their_events(project: Project) -> None:
    bookings = project.feature("bookings", REDIS_FEATURE.format(event="booking.confirmed"))
    news = project.feature("news", REDIS_FEATURE.format(event="news.published"))
    events = BotRedisDispatcher()
    include_features(events, [bookings, news])
    received: list[tuple[str, dict[str, object]]] = []
    events.setup(container=received)

    await events.process_message({"type": "booking.confirmed", "chat_id": 1})
    await events.process_message({"type": "news.published", "chat_id": 2})

    assert received == [
        ("booking.confirmed", {"type": "booking.confirmed", "chat_id": 1}),
        ("news.published", {"type": "news.published", "chat_id": 2}),
    ]


def test_a_feature_may_declare_an_aiogram_router_and_no_redis_router(project: Project) -> None:
    both = project.feature(
        "both", REDIS_FEATURE.format(event="a.b") + COMMANDS_FEATURE.format(name="both")
    )
    commands = project.feature("commands", COMMANDS_FEATURE.format(name="commands"))

    redis_routers = collect_redis_routers([both, commands])
    routers = collect_routers([both, commands])

    assert [type(r) for r in redis_routers] == [RedisRouter]
    assert [r.name for r in routers] == ["both", "commands"]
    dp = Dispatcher()
    loaded = include_features(BotRedisDispatcher(), [both, commands], dp=dp)
    assert [f.name for f in loaded] == [both, commands]
    assert [r.name for r in dp.sub_routers] == ["both", "commands"]


def test_a_missing_feature_package_is_named(project: Project) -> None:
    name = f"{project.package}.features.nope"

    with pytest.raises(FeatureDiscoveryError, match=r"feature '.*\.nope' not found") as info:
        load_features([name])

    assert isinstance(info.value, CodexBotError)


def test_a_missing_top_level_package_is_named() -> None:
    with pytest.raises(
        FeatureDiscoveryError, match=r"feature 'no_such_project\.features\.x' not found"
    ):
        load_features(["no_such_project.features.x"])


def test_a_feature_without_feature_setting_is_named(project: Project) -> None:
    name = project.feature("empty", None)

    with pytest.raises(FeatureDiscoveryError, match=r"'.*\.empty' has no feature_setting\.py"):
        load_features([name])


def test_a_broken_import_inside_feature_setting_is_not_reported_as_missing(
    project: Project,
) -> None:
    name = project.feature("broken", "import not_installed_dependency_xyz\n")

    with pytest.raises(FeatureDiscoveryError) as info:
        load_features([name])

    message = str(info.value)
    assert "broken" in message
    assert "failed to import" in message
    assert "not_installed_dependency_xyz" in message
    assert "not found" not in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_an_error_raised_by_feature_setting_is_chained(project: Project) -> None:
    name = project.feature("raises", "raise RuntimeError('bad config')\n")

    with pytest.raises(FeatureDiscoveryError, match="RuntimeError: bad config") as info:
        load_features([name])

    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_feature_without_any_router_is_named(project: Project) -> None:
    name = project.feature("silent", "HANDLERS = []\n")

    with pytest.raises(FeatureDiscoveryError, match=r"'.*\.silent'.*declares neither"):
        load_features([name])


def test_a_redis_router_of_the_wrong_type_is_named(project: Project) -> None:
    name = project.feature("wrong", "from aiogram import Router\nredis_router = Router()\n")

    with pytest.raises(
        FeatureDiscoveryError, match="redis_router has type Router, expected a RedisRouter"
    ):
        load_features([name])


def test_an_aiogram_router_of_the_wrong_type_is_named(project: Project) -> None:
    name = project.feature("wrong", "router = object()\n")

    with pytest.raises(
        FeatureDiscoveryError, match="router has type object, expected an aiogram Router"
    ):
        load_features([name])


def test_a_feature_listed_twice_is_refused(project: Project) -> None:
    name = project.feature("twice", REDIS_FEATURE.format(event="a.b"))

    with pytest.raises(FeatureDiscoveryError, match="listed twice"):
        load_features([name, name])


def test_nothing_is_included_when_one_feature_is_wrong(project: Project) -> None:
    good = project.feature("good", REDIS_FEATURE.format(event="a.b"))
    events = BotRedisDispatcher()

    with pytest.raises(FeatureDiscoveryError):
        include_features(events, [good, f"{project.package}.features.missing"])

    assert not events.handles("a.b")


def test_the_example_bot_features_load() -> None:
    from example_bot.settings import FEATURES

    features = load_features(FEATURES)

    assert {
        f.name.rsplit(".", 1)[1]: (f.redis_router is not None, f.router is not None)
        for f in features
    } == {
        "notifications": (True, False),
        "bookings": (True, False),
        "status": (False, True),
    }
    assert all(isinstance(f.router, Router) for f in features if f.router is not None)
